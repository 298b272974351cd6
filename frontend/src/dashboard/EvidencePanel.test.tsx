import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { EvidencePanel } from './EvidencePanel';

describe('EvidencePanel', () => {
  it('shows what counts, what was set aside by reason, and the flagged voters', () => {
    render(
      <EvidencePanel
        evidence={{
          enabled: true,
          kept: 120,
          set_aside: 14,
          by_reason: { session_too_new: 3, over_user_cap: 1, side_bias: 10, against_consensus: 0 },
          flagged_voters: [{ user_id: 'u-abc', reason: 'side_bias: side a in 10 of 10 (p=0.002)' }],
          thumbs_kept: 40,
          thumbs_set_aside: 6,
          thumbs_by_reason: { session_too_new: 2, over_user_cap: 4 },
        }}
      />,
    );
    expect(screen.getByTestId('evidence-kept')).toHaveTextContent('120');
    expect(screen.getByTestId('evidence-set-aside')).toHaveTextContent('14');
    expect(screen.getByTestId('evidence-side_bias')).toHaveTextContent('10');
    expect(screen.getByTestId('evidence-against_consensus')).toHaveTextContent('0');
    expect(screen.getByTestId('evidence-flagged')).toHaveTextContent('u-abc: side_bias');
    expect(screen.getByTestId('evidence-thumbs-kept')).toHaveTextContent('40');
    expect(screen.getByTestId('evidence-thumbs-over_user_cap')).toHaveTextContent('4');
    expect(screen.getByTestId('evidence-thumbs-side_bias')).toHaveTextContent('-'); // no sides
  });

  it('says so when the screen is off, and shows nothing without figures', () => {
    const { rerender } = render(
      <EvidencePanel
        evidence={{
          enabled: false,
          kept: 5,
          set_aside: 0,
          by_reason: {},
          flagged_voters: [],
          thumbs_kept: 3,
          thumbs_set_aside: 0,
          thumbs_by_reason: {},
        }}
      />,
    );
    expect(screen.getByText(/screen is off/)).toBeInTheDocument();
    expect(screen.queryByTestId('evidence-flagged')).toBeNull();
    rerender(<EvidencePanel evidence={null} />);
    expect(screen.queryByTestId('evidence')).toBeNull();
  });
});
