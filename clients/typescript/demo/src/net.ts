/**
 * Counts the page's GET requests to the order API (`/api/orders…`), started
 * and in flight, whoever makes them: the badge shows `resyncing` while the
 * refetch a resync signal caused is running, without knowing how the sync
 * module fetches.
 */
type Listener = () => void;

let started = 0;
let inFlight = 0;
const listeners = new Set<Listener>();

function emit(): void {
  for (const l of [...listeners]) l();
}

function isOrderRead(input: RequestInfo | URL, init?: RequestInit): boolean {
  const url = input instanceof Request ? input.url : String(input);
  const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
  return method === 'GET' && new URL(url, location.href).pathname.startsWith('/api/orders');
}

export function installFetchTracker(): void {
  const original = window.fetch.bind(window);
  window.fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    if (!isOrderRead(input, init)) return original(input, init);
    started += 1;
    inFlight += 1;
    emit();
    try {
      return await original(input, init);
    } finally {
      inFlight -= 1;
      emit();
    }
  };
}

export const orderReads = {
  get started(): number {
    return started;
  },
  get inFlight(): number {
    return inFlight;
  },
  subscribe(listener: Listener): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
};
