// The root entry is the framework-free client only, so `import`/`require` of
// `@pgbroadcast/client` needs no React or TanStack package. The bindings have
// their own entries: `/react`, `/query`, `/db` (and `/tanstack` = query + db).
export * from './client.js';
