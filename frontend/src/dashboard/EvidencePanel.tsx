import type { StatsOut } from '../api/types';

type Evidence = NonNullable<StatsOut['evidence']>;

const REASONS: Record<string, string> = {
  session_too_new: 'Session too new (counts once older)',
  over_user_cap: 'Past the cap per voter or address',
  side_bias: 'Voter picks one side regardless',
  against_consensus: 'Voter against everyone else',
};

/** Which votes the canary rule and the trainer count, and what was set aside. */
export function EvidencePanel({ evidence }: { evidence: Evidence | null | undefined }) {
  if (!evidence) return null;
  return (
    <section className="card" aria-labelledby="evidence-title" data-testid="evidence">
      <h2 id="evidence-title">Votes that count</h2>
      {!evidence.enabled && <p className="muted">The vote screen is off: every comparison vote counts.</p>}
      <p>
        <span data-testid="evidence-kept">{evidence.kept}</span> comparison votes count;{' '}
        <span data-testid="evidence-set-aside">{evidence.set_aside}</span> set aside.{' '}
        <span data-testid="evidence-thumbs-kept">{evidence.thumbs_kept}</span> thumbs count;{' '}
        <span data-testid="evidence-thumbs-set-aside">{evidence.thumbs_set_aside}</span> set aside.
      </p>
      <table className="table">
        <thead>
          <tr>
            <th>Reason</th>
            <th>Comparisons</th>
            <th>Thumbs</th>
          </tr>
        </thead>
        <tbody>
          {Object.entries(REASONS).map(([key, label]) => (
            <tr key={key}>
              <td>{label}</td>
              <td data-testid={`evidence-${key}`}>{evidence.by_reason[key] ?? 0}</td>
              <td data-testid={`evidence-thumbs-${key}`}>
                {key in evidence.thumbs_by_reason ? evidence.thumbs_by_reason[key] : '-'}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {evidence.flagged_voters.length > 0 && (
        <>
          <h3>Flagged voters</h3>
          <ul data-testid="evidence-flagged">
            {evidence.flagged_voters.map((v) => (
              <li key={v.user_id}>
                <code>{v.user_id}</code>: {v.reason}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
