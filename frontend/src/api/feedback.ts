/** Thumbs on replies (/v1/feedback) and the reason tags; comparison votes over REST. */
import { api, unwrap } from './http';
import type { Choice, ComparisonOut, ComparisonReason, RatingOut, RatingReason, ReasonsOut, Thumb } from './types';

export interface RatingInput {
  generation_id: string;
  rating: Thumb;
  reason?: RatingReason | null;
  comment?: string | null;
}

/** What the vote widget needs; an object so tests can pass a fake. */
export interface FeedbackApi {
  rate(body: RatingInput): Promise<RatingOut>;
  withdraw(generationId: string): Promise<RatingOut>;
}

export const feedbackApi: FeedbackApi = {
  rate: (body) => unwrap(api.POST('/v1/feedback', { body })),
  withdraw: (generationId) =>
    unwrap(api.DELETE('/v1/feedback/{generation_id}', { params: { path: { generation_id: generationId } } })),
};

export function getReasons(): Promise<ReasonsOut> {
  return unwrap(api.GET('/v1/feedback/reasons'));
}

export function voteComparison(id: string, choice: Choice, reason: ComparisonReason | null): Promise<ComparisonOut> {
  return unwrap(
    api.POST('/v1/comparisons/{comparison_id}/vote', {
      params: { path: { comparison_id: id } },
      body: { choice, reason },
    }),
  );
}
