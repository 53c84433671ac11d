/**
 * TanStack integrations, all in one entry (`@pgbroadcast/client/tanstack`,
 * kept for compatibility). Prefer the narrower entries:
 * - `@pgbroadcast/client/query`: TanStack Query v5 (types need only `@tanstack/query-core`);
 * - `@pgbroadcast/client/db`: TanStack DB query/electric collections, `useLiveOrFrozen`, `configureSync`.
 */
export * from './query.js';
export * from './db.js';
