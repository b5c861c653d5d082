/**
 * Server command resolution and the checks behind clear start-up errors. Pure: the file system,
 * PATH lookup and process spawning are passed in, so the unit tests need no VS Code.
 */
import * as path from 'node:path';
import type { ClientSettings } from './settings';

export const DEFAULT_COMMAND = ['parafill', 'serve'];
/** How a Python interpreter starts the server (what the `parafill` console script runs). */
export const PYTHON_ARGS = ['-m', 'lsp_server.cli', 'serve'];

export interface ServerCommand {
  command: string;
  args: string[];
  /** Set when the command is a Python interpreter that must have parafill installed. */
  python?: boolean;
}

/** A start-up problem with a message a user can act on. */
export class ServerCommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServerCommandError';
  }
}

export interface Env {
  PATH?: string;
  PATHEXT?: string;
}

/** An executable's full path: `cmd` itself if it has a directory part, else looked up on PATH. */
export function which(
  cmd: string,
  env: Env,
  isExecutable: (file: string) => boolean,
  platform: string = process.platform,
): string | undefined {
  if (cmd.includes('/') || (platform === 'win32' && cmd.includes('\\'))) {
    return isExecutable(cmd) ? cmd : undefined;
  }
  const sep = platform === 'win32' ? ';' : ':';
  const exts = platform === 'win32' ? ['', ...(env.PATHEXT ?? '.EXE;.CMD;.BAT').split(';')] : [''];
  for (const dir of (env.PATH ?? '').split(sep)) {
    if (!dir) continue;
    for (const ext of exts) {
      const file = path.join(dir, cmd + ext);
      if (isExecutable(file)) return file;
    }
  }
  return undefined;
}

/**
 * The command that starts the server, from the settings: `server.command` if set, else
 * `server.pythonPath -m lsp_server.cli serve`, else `parafill serve` from PATH.
 * Throws ServerCommandError when the executable cannot be found.
 */
export function resolveServerCommand(
  settings: Pick<ClientSettings, 'command' | 'pythonPath'>,
  find: (cmd: string) => string | undefined,
): ServerCommand {
  if (settings.command.length > 0) {
    const [cmd, ...args] = settings.command;
    const found = find(cmd);
    if (!found) {
      throw new ServerCommandError(
        `Parafill: the server command "${cmd}" (setting parafill.server.command) was not found or is not executable.`,
      );
    }
    return { command: found, args };
  }
  if (settings.pythonPath) {
    const found = find(settings.pythonPath);
    if (!found) {
      throw new ServerCommandError(
        `Parafill: the Python interpreter "${settings.pythonPath}" (setting parafill.server.pythonPath) was not found.`,
      );
    }
    return { command: found, args: [...PYTHON_ARGS], python: true };
  }
  const [cmd, ...args] = DEFAULT_COMMAND;
  const found = find(cmd);
  if (!found) {
    throw new ServerCommandError(
      'Parafill: the "parafill" command was not found on PATH. Install it (pip install parafill, ' +
        'or pip install -e . in a checkout) or set parafill.server.command or parafill.server.pythonPath.',
    );
  }
  return { command: found, args };
}

/** Result of running a short process: exit status (null if it could not run) and its stderr. */
export interface RunResult {
  status: number | null;
  stderr: string;
}

/** Checks that a Python interpreter can import the server; throws ServerCommandError if not. */
export function checkPython(python: string, run: (cmd: string, args: string[]) => RunResult): void {
  const result = run(python, ['-c', 'import lsp_server']);
  if (result.status === 0) return;
  const detail = result.stderr.trim().split('\n').pop() ?? '';
  throw new ServerCommandError(
    `Parafill: "${python}" cannot import the server (${detail || 'exit ' + result.status}). ` +
      `Install parafill into that environment: ${python} -m pip install parafill`,
  );
}
