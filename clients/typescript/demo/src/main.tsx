/**
 * The demo's browser app, served by `pgbroadcast demo` (bundled by
 * `npm run build:demo` into src/demo/web/app.js). One page; it routes on
 * location.pathname.
 */
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { configureSync, SyncProvider } from './sync/index.js';
import { installFetchTracker } from './net.js';
import { App } from './App.js';
import './app.css';

installFetchTracker();
configureSync({
  broadcastUrl: `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws/broadcast`,
  apiUrl: location.origin,
});

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <SyncProvider>
      <App />
    </SyncProvider>
  </StrictMode>,
);
