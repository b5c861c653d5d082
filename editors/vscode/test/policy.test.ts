import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { CRASH_WINDOW_MS, MAX_RESTARTS, restartDelayMs, statusSummary, statusView } from '../src/policy';

test('restart delay doubles per recent crash, then gives up', () => {
  const now = 1_000_000;
  assert.equal(restartDelayMs([], now), 1000);
  assert.equal(restartDelayMs([now - 10], now), 2000);
  assert.equal(restartDelayMs([now - 20, now - 10], now), 4000);
  const many = Array.from({ length: MAX_RESTARTS }, (_, i) => now - i);
  assert.equal(restartDelayMs(many, now), undefined);
});

test('old crashes are forgotten', () => {
  const now = 10 * CRASH_WINDOW_MS;
  const old = Array.from({ length: 10 }, (_, i) => now - CRASH_WINDOW_MS - i);
  assert.equal(restartDelayMs(old, now), 1000);
});

test('status bar shows state and last latency', () => {
  assert.equal(statusView({ state: 'ready', lastLatencyMs: 41.6 }).text, '$(sparkle) Parafill 42 ms');
  assert.equal(statusView({ state: 'ready' }).text, '$(sparkle) Parafill');
  assert.equal(statusView({ state: 'ready', latencyMs: { p50: 120.2, p95: 300, n: 4 } }).text, '$(sparkle) Parafill 120 ms');
  assert.equal(statusView({ state: 'ready', latencyMs: { p50: null, p95: null, n: 0 } }).text, '$(sparkle) Parafill');
  assert.match(statusView({ state: 'loading' }).text, /loading/);
  const err = statusView({ state: 'error', error: 'no weights' });
  assert.ok(err.isError);
  assert.match(err.tooltip, /no weights/);
});

test('the status says which files fed the last suggestion, without their text', () => {
  const chunk = { path: 'pkg/core.py', lines: [6, 10], text: 'def compute_total(items):' };
  const status = {
    state: 'ready',
    context: { enabled: true, last: { summary: 'context: 2 chunks from core.py, grouping.py', chunks: [chunk] } },
  };
  const view = statusView(status);
  assert.match(view.tooltip, /context: 2 chunks from core.py, grouping.py/);
  assert.doesNotMatch(view.tooltip, /compute_total/);
  assert.match(statusSummary(status), /context: 2 chunks from core.py, grouping.py/);
  assert.doesNotMatch(statusSummary({ state: 'ready', context: { enabled: false } }), /context/);
});
