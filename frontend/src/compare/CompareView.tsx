/** Arena-style A/B: one prompt, two anonymous replies side by side, one vote, then reveal. */
import { type FormEvent, useEffect, useReducer, useRef, useState } from 'react';
import { asErrorInfo } from '../api/errors';
import { voteComparison } from '../api/feedback';
import type { Choice, ComparisonReason } from '../api/types';
import { reasonLabel, useReasons } from '../feedback/reasons';
import { Markdown } from '../markdown/Markdown';
import { ConnectionBanner } from '../ui/ConnectionBanner';
import { ErrorNote } from '../ui/ErrorNote';
import { useChatSocket } from '../ws/useChatSocket';
import { type SideState, canVote, compareReducer, emptyCompare, isLive } from './store';

const CHOICES: { choice: Choice; label: string; testId: string }[] = [
  { choice: 'a', label: 'A is better', testId: 'vote-a' },
  { choice: 'b', label: 'B is better', testId: 'vote-b' },
  { choice: 'tie', label: 'Tie', testId: 'vote-tie' },
  { choice: 'both_bad', label: 'Both are bad', testId: 'vote-both-bad' },
];

const CHOSEN: Record<Choice, string> = { a: 'You preferred A.', b: 'You preferred B.', tie: 'You called it a tie.', both_bad: 'You found both bad.' };

function SidePanel({ name, side, live }: { name: 'A' | 'B'; side: SideState; live: boolean }) {
  const id = name.toLowerCase();
  return (
    <section className="side" aria-labelledby={`side-${id}-title`} data-testid={`side-${id}`}>
      <h2 id={`side-${id}-title`}>Model {name}</h2>
      <div className="side-body" role="log" aria-live="polite" aria-busy={live && !side.done}>
        {side.content ? <Markdown source={side.content} /> : live ? <p className="typing">●●●</p> : null}
      </div>
      {side.model && (
        <p className="reveal" data-testid={`reveal-${id}`}>
          {name}: <strong>{side.model}</strong>
        </p>
      )}
    </section>
  );
}

export function CompareView() {
  const { socket, info } = useChatSocket();
  const reasons = useReasons();
  const [state, dispatch] = useReducer(compareReducer, emptyCompare);
  const [prompt, setPrompt] = useState('');
  const [reason, setReason] = useState<ComparisonReason | null>(null);
  const live = isLive(state);
  const liveRef = useRef(live);
  liveRef.current = live;

  useEffect(() => socket.onFrame((frame) => dispatch({ type: 'frame', frame })), [socket]);
  useEffect(() => {
    if (info.status === 'reconnecting' && liveRef.current) dispatch({ type: 'connection-lost' });
  }, [info.status]);

  function ask(e: FormEvent): void {
    e.preventDefault();
    const text = prompt.trim();
    if (!text || live) return;
    dispatch({ type: 'ask', prompt: text });
    setReason(null);
    if (!socket.send({ type: 'compare', messages: [{ role: 'user', content: text }] })) {
      dispatch({ type: 'failed', error: { message: 'Not connected to the server; reconnecting. Try again in a moment.', type: 'connection_error', code: 'not_connected', param: null } });
    }
  }

  async function vote(choice: Choice): Promise<void> {
    const id = state.comparisonId;
    if (!id || !canVote(state)) return;
    dispatch({ type: 'vote', choice });
    if (socket.send({ type: 'vote', comparison_id: id, choice, reason })) return;
    try {
      dispatch({ type: 'voted', comparison: await voteComparison(id, choice, reason) });
    } catch (e) {
      dispatch({ type: 'vote-failed', error: asErrorInfo(e) });
    }
  }

  return (
    <div className="compare">
      <ConnectionBanner info={info} onRetry={() => socket.retryNow()} />
      <h1 className="page-title">Compare two replies</h1>
      <form className="compare-form" onSubmit={ask}>
        <label htmlFor="compare-input">Ask two anonymous models the same thing, then pick the better reply.</label>
        <div className="row">
          <textarea
            id="compare-input"
            data-testid="compare-input"
            rows={2}
            value={prompt}
            disabled={live}
            onChange={(e) => setPrompt(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) ask(e);
            }}
          />
          {live ? (
            <button type="button" className="btn danger" data-testid="compare-stop" onClick={() => socket.send({ type: 'stop' })}>
              <span aria-hidden="true">■</span> Stop
            </button>
          ) : (
            <button type="submit" className="btn primary" data-testid="compare-send" disabled={!prompt.trim()}>
              Compare
            </button>
          )}
        </div>
      </form>
      {state.error && <ErrorNote error={state.error} testId="compare-error" />}
      {state.phase !== 'idle' && (
        <>
          <div className="sides">
            <SidePanel name="A" side={state.a} live={live} />
            <SidePanel name="B" side={state.b} live={live} />
          </div>
          <div className="vote-bar" role="group" aria-label="Which reply is better?">
            {state.choice === null && reasons && reasons.comparison.length > 0 && (
              <div className="chips" role="group" aria-label="Why (optional)">
                {reasons.comparison.map((tag) => (
                  <button
                    key={tag}
                    type="button"
                    className="chip"
                    data-testid={`compare-reason-${tag}`}
                    aria-pressed={reason === tag}
                    onClick={() => setReason(reason === tag ? null : tag)}
                  >
                    {reasonLabel(tag)}
                  </button>
                ))}
              </div>
            )}
            <div className="row wrap">
              {CHOICES.map((c) => (
                <button
                  key={c.choice}
                  type="button"
                  className={`btn${state.choice === c.choice ? ' primary' : ''}`}
                  data-testid={c.testId}
                  aria-pressed={state.choice === c.choice}
                  disabled={!canVote(state)}
                  onClick={() => void vote(c.choice)}
                >
                  {c.label}
                </button>
              ))}
            </div>
            {state.choice && (
              <p role="status" data-testid="vote-result">
                {CHOSEN[state.choice]} Thanks! The models are revealed below each side.
              </p>
            )}
            {state.voteError && <ErrorNote error={state.voteError} testId="compare-vote-error" />}
          </div>
          {!live && (
            <button type="button" className="btn" data-testid="compare-new" onClick={() => { dispatch({ type: 'reset' }); setPrompt(''); }}>
              New round
            </button>
          )}
        </>
      )}
    </div>
  );
}
