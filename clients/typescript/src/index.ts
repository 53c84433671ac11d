export * from './client.js';
export * from './react.js';
export * from './tanstack.js';
