import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { statusSummary } from '../src/policy';
import { formatSteps } from '../src/steps';

test('the denoising document shows every step, masked slots and the suggestion', () => {
  const text = formatSteps(
    {
      kind: 'line',
      steps: ['░░░', 'dy ░ ░', 'dy = q[0]'],
      suggestion: 'dy = q[0]',
      stepsUsed: 3,
      tokens: 6,
      modelMs: 82.4,
      mask: '░',
      position: { line: 6, character: 4 },
    },
    'geometry.py',
  );
  const lines = text.split('\n');
  assert.match(lines[0], /geometry\.py at line 7, column 5/);
  assert.equal(lines[1], 'line region, 3 steps, 6 tokens, 82 ms; ░ = a slot still masked');
  assert.deepEqual(lines.slice(3, 6), ['step  1 | ░░░', 'step  2 | dy ░ ░', 'step  3 | dy = q[0]']);
  assert.equal(lines[7], 'shown   | dy = q[0]');
});

test('a multi-line step keeps its lines under its label', () => {
  const text = formatSteps({ steps: ['a = 1\n░░░'], suggestion: 'a = 1\nb' }, 'x.py');
  assert.ok(text.includes('step  1 | a = 1\n        | ░░░'));
  assert.ok(text.includes('shown   | a = 1\n        | b'));
});

test('the status summary has the counters and the acceptance', () => {
  const line = statusSummary({
    state: 'ready',
    model: 'm',
    device: 'cpu',
    lastLatencyMs: 80.4,
    requests: 5,
    completed: 4,
    typedThrough: 2,
    acceptance: { shown: 3, accepted: 1, partial: 1, dismissed: 1, acceptRate: 1 / 3 },
  });
  assert.equal(
    line,
    'Parafill: ready · model m on cpu · last 80 ms · requests 5, completed 4, typed through 2 · ' +
      'suggestions shown 3, accepted 1, in part 1, dismissed 1 (33 % accepted)',
  );
  assert.equal(statusSummary({ state: 'stopped' }), 'Parafill: stopped');
});
