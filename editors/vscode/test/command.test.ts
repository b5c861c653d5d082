import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { checkPython, PYTHON_ARGS, resolveServerCommand, ServerCommandError, which } from '../src/command';

const files = new Set(['/venv/bin/parafill', '/usr/bin/python3', '/opt/bin/parafill']);
const isExec = (f: string) => files.has(f);
const find = (cmd: string) => which(cmd, { PATH: '/nope:/venv/bin:/usr/bin' }, isExec, 'linux');

test('which: PATH lookup in order, explicit paths checked as they are', () => {
  assert.equal(which('parafill', { PATH: '/opt/bin:/venv/bin' }, isExec, 'linux'), '/opt/bin/parafill');
  assert.equal(which('/usr/bin/python3', { PATH: '' }, isExec, 'linux'), '/usr/bin/python3');
  assert.equal(which('/usr/bin/python9', { PATH: '/usr/bin' }, isExec, 'linux'), undefined);
  assert.equal(which('python3', {}, isExec, 'linux'), undefined);
});

test('default command is parafill serve from PATH', () => {
  assert.deepEqual(resolveServerCommand({ command: [], pythonPath: '' }, find), {
    command: '/venv/bin/parafill',
    args: ['serve'],
  });
});

test('server.command wins over pythonPath', () => {
  assert.deepEqual(resolveServerCommand({ command: ['/opt/bin/parafill', 'serve', '-v'], pythonPath: 'python3' }, find), {
    command: '/opt/bin/parafill',
    args: ['serve', '-v'],
  });
});

test('pythonPath runs the server module', () => {
  assert.deepEqual(resolveServerCommand({ command: [], pythonPath: 'python3' }, find), {
    command: '/usr/bin/python3',
    args: PYTHON_ARGS,
    python: true,
  });
});

test('missing executables give clear errors naming the setting', () => {
  assert.throws(() => resolveServerCommand({ command: ['nope'], pythonPath: '' }, () => undefined), (e: Error) => {
    return e instanceof ServerCommandError && /"nope".*parafill\.server\.command/.test(e.message);
  });
  assert.throws(() => resolveServerCommand({ command: [], pythonPath: 'py9' }, () => undefined), /parafill\.server\.pythonPath/);
  assert.throws(() => resolveServerCommand({ command: [], pythonPath: '' }, () => undefined), /not found on PATH/);
});

test('checkPython: passes when lsp_server imports, explains when it does not', () => {
  checkPython('/usr/bin/python3', () => ({ status: 0, stderr: '' }));
  assert.throws(
    () => checkPython('/usr/bin/python3', () => ({ status: 1, stderr: "Traceback\nModuleNotFoundError: No module named 'lsp_server'" })),
    (e: Error) => /No module named 'lsp_server'/.test(e.message) && /pip install parafill/.test(e.message),
  );
});
