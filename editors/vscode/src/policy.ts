/**
 * Pure policies: when to restart a crashed server, and how the status bar shows the server state.
 */

/** Crashes counted within this window decide whether to restart again. */
export const CRASH_WINDOW_MS = 3 * 60 * 1000;
/** Restarts allowed within the window before giving up with a message. */
export const MAX_RESTARTS = 4;
export const FIRST_DELAY_MS = 1000;
export const MAX_DELAY_MS = 16000;

/**
 * Delay before restarting after a crash at `now`, given the earlier crash times (ms), or
 * undefined when the server crashed too often and should stay down.
 */
export function restartDelayMs(crashTimes: number[], now: number): number | undefined {
  const recent = crashTimes.filter((t) => now - t < CRASH_WINDOW_MS && t <= now).length;
  if (recent >= MAX_RESTARTS) return undefined;
  return Math.min(FIRST_DELAY_MS * 2 ** recent, MAX_DELAY_MS);
}

/** What `parafill/status` returns (the fields the client shows; the server may send more). */
export interface ServerStatus {
  state?: string;
  model?: string;
  device?: string;
  lastLatencyMs?: number | null;
  latencyMs?: { p50?: number | null; p95?: number | null; n?: number } | number | null;
  error?: string | null;
  [key: string]: unknown;
}

export interface StatusView {
  text: string;
  tooltip: string;
  isError: boolean;
}

/**
 * The completion latency to show, in ms: `lastLatencyMs` when the server sends it, else the
 * median of `latencyMs: {p50, p95, n}`.
 */
export function lastLatency(status: ServerStatus): number | undefined {
  const last = status.lastLatencyMs;
  if (typeof last === 'number' && Number.isFinite(last)) return last;
  const summary = status.latencyMs as { p50?: unknown } | number | null | undefined;
  if (typeof summary === 'number' && Number.isFinite(summary)) return summary;
  if (summary && typeof summary === 'object' && typeof summary.p50 === 'number') return summary.p50;
  return undefined;
}

/**
 * What fed the last suggestion beyond its file, as the server words it ("context: 3 chunks from
 * core.py, grouping.py"; lsp_server/context/), or '' when nothing did.
 */
export function contextSummary(status: ServerStatus): string {
  const ctx = status.context as { last?: { summary?: unknown } } | null | undefined;
  const summary = ctx && typeof ctx === 'object' ? ctx.last?.summary : undefined;
  return typeof summary === 'string' ? summary : '';
}

/** Status-bar text and tooltip for a server state ('starting' and 'stopped' are client-side). */
export function statusView(status: ServerStatus): StatusView {
  const state = String(status.state ?? 'unknown');
  const latency = lastLatency(status);
  const details = Object.entries(status)
    .filter(([k, v]) => v !== null && v !== undefined && k !== 'settings' && k !== 'context')
    .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join('\n');
  const context = contextSummary(status);
  const tooltip = `Parafill\n${context ? context + '\n' : ''}${details}\nClick for details.`;
  switch (state) {
    case 'ready':
      return {
        text: latency === undefined ? '$(sparkle) Parafill' : `$(sparkle) Parafill ${Math.round(latency)} ms`,
        tooltip,
        isError: false,
      };
    case 'loading':
    case 'starting':
      return { text: '$(loading~spin) Parafill: loading', tooltip, isError: false };
    case 'error':
      return { text: '$(error) Parafill: error', tooltip, isError: true };
    case 'stopped':
      return { text: '$(circle-slash) Parafill: stopped', tooltip, isError: true };
    default:
      return { text: `$(question) Parafill: ${state}`, tooltip, isError: false };
  }
}

/** Acceptance counts as `parafill/status` reports them (lsp_server/acceptance.py). */
export interface AcceptanceStatus {
  shown?: number;
  accepted?: number;
  partial?: number;
  dismissed?: number;
  acceptRate?: number | null;
}

/**
 * One line for "Parafill: Show Status": state, model, the request counters and what became of
 * the suggestions shown (the full status is behind its Details button).
 */
export function statusSummary(status: ServerStatus): string {
  const parts = [`Parafill: ${status.state ?? 'unknown'}`];
  if (status.model) parts.push(`model ${status.model} on ${status.device ?? '?'}`);
  if (status.error) parts.push(`error: ${status.error}`);
  const latency = lastLatency(status);
  if (latency !== undefined) parts.push(`last ${Math.round(latency)} ms`);
  const context = contextSummary(status);
  if (context) parts.push(context);
  const n = (k: string) => (typeof status[k] === 'number' ? (status[k] as number) : 0);
  if (typeof status.requests === 'number') {
    parts.push(`requests ${n('requests')}, completed ${n('completed')}, typed through ${n('typedThrough')}`);
  }
  const a = status.acceptance as AcceptanceStatus | undefined;
  if (a && typeof a === 'object') {
    const rate = typeof a.acceptRate === 'number' ? ` (${(100 * a.acceptRate).toFixed(0)} % accepted)` : '';
    parts.push(
      `suggestions shown ${a.shown ?? 0}, accepted ${a.accepted ?? 0}, in part ${a.partial ?? 0}, ` +
        `dismissed ${a.dismissed ?? 0}${rate}`,
    );
  }
  return parts.join(' · ');
}
