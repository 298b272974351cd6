/** Short names for the generated schema types (src/api/schema.d.ts, from openapi.json). */
import type { components } from './schema';

type S = components['schemas'];

export type ChatMessageIn = S['ChatMessage'];
export type ComparisonOut = S['ComparisonOut'];
export type Conversation = S['ConversationOut'];
export type ConversationDetail = S['ConversationDetail'];
export type StoredMessage = S['MessageOut'];
export type EventOut = S['EventOut'];
export type PolicyList = S['PolicyList'];
export type PolicyOut = S['PolicyOut'];
export type RatingOut = S['RatingOut'];
export type RatingsOut = S['RatingsOut'];
export type VersionRating = S['VersionRatingOut'];
export type ReasonsOut = S['ReasonsOut'];
export type RatingReason = NonNullable<S['FeedbackRequest']['reason']>;
export type ComparisonReason = NonNullable<S['VoteRequest']['reason']>;
export type RunDetail = S['RunDetail'];
export type RunOut = S['RunOut'];
export type RunSummary = S['RunSummary'];
export type StatsOut = S['StatsOut'];
export type DayVotes = S['DayVotes'];
export type Usage = S['Usage'];
export type ErrorDetail = S['ErrorDetail'];

export type Thumb = 'up' | 'down';
export type Choice = 'a' | 'b' | 'tie' | 'both_bad';
