/**
 * The Parafill server's lifecycle in VS Code: resolve and check the command, start the language
 * client, restart it with back-off when it crashes, and poll `parafill/status` for the status bar.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  RevealOutputChannelOn,
  State,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import { checkPython, resolveServerCommand, ServerCommandError, which, type ServerCommand } from './command';
import { restartDelayMs, statusView, type ServerStatus } from './policy';
import { clientSettings, documentSelector, initializationOptions, SECTION } from './settings';
import { STEPS_REQUEST, type StepsResult } from './steps';

export const STATUS_REQUEST = 'parafill/status';
export const FILL_COMMAND = 'parafill.fill';
const STATUS_POLL_MS = 2000;
/** Lines of the server's stderr quoted when it keeps crashing. */
const STDERR_TAIL_LINES = 3;

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function get(key: string): unknown {
  return vscode.workspace.getConfiguration(SECTION).get(key);
}

/** The server command from the settings; throws ServerCommandError with a message for the user. */
export function serverCommand(): ServerCommand {
  const settings = clientSettings(get);
  const resolved = resolveServerCommand(settings, (cmd) => which(cmd, process.env, isExecutable));
  if (resolved.python) {
    checkPython(resolved.command, (cmd, args) => {
      // From a neutral directory, so a checkout in the current directory does not count.
      const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30000, cwd: os.tmpdir() });
      return { status: r.error ? null : r.status, stderr: r.stderr ?? String(r.error ?? '') };
    });
  }
  return resolved;
}

export class ParafillServer implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private crashes: number[] = [];
  private readonly crashed = new WeakSet<LanguageClient>();
  private stderrTail: string[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly poller: NodeJS.Timeout;
  private lastStatus: ServerStatus = { state: 'stopped' };

  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly statusItem: vscode.StatusBarItem,
  ) {
    this.poller = setInterval(() => void this.poll(), STATUS_POLL_MS);
  }

  /** Starts (or restarts) the server; shows an error message instead of throwing. */
  async start(): Promise<void> {
    await this.stop();
    let command: ServerCommand;
    try {
      command = serverCommand();
    } catch (e) {
      this.show({ state: 'error', error: String((e as Error).message) });
      const message = e instanceof ServerCommandError ? e.message : `Parafill: ${e}`;
      this.output.appendLine(message);
      void vscode.window.showErrorMessage(message, 'Open Settings').then((choice) => {
        if (choice) void vscode.commands.executeCommand('workbench.action.openSettings', SECTION);
      });
      return;
    }
    this.output.appendLine(`Starting ${command.command} ${command.args.join(' ')}`);
    // Spawned here (not by the client library) to keep the end of stderr for the crash message;
    // the library still copies stderr to the output channel.
    const serverOptions: ServerOptions = async () => {
      const proc = spawn(command.command, command.args, {
        cwd: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
        env: process.env,
      });
      proc.stderr.on('data', (data: Buffer) => this.keepStderr(data.toString()));
      return proc;
    };
    const languages = clientSettings(get).languages;
    // Declared before the options: their error handler refers to it.
    let client: LanguageClient | undefined;
    const clientOptions: LanguageClientOptions = {
      documentSelector: documentSelector(languages),
      initializationOptions: initializationOptions(get),
      synchronize: { configurationSection: SECTION },
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => {
          this.onCrash(client);
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
    };
    client = new LanguageClient('parafill', 'Parafill', serverOptions, clientOptions);
    this.client = client;
    this.show({ state: 'starting' });
    try {
      await client.start();
    } catch (e) {
      // The server exited (or never answered) during initialize: a crash like any other.
      this.output.appendLine(`Parafill server failed to start: ${e}`);
      this.onCrash(client);
      return;
    }
    void this.poll();
  }

  async stop(): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client && client.state !== State.Stopped) {
      try {
        await client.stop(5000);
      } catch (e) {
        this.output.appendLine(`Parafill: stopping the server: ${e}`);
      }
    }
    this.show({ state: 'stopped' });
  }

  /**
   * The crash policy: restart with back-off, then give up with a message that offers the log.
   * Counted once per client, and only for the current one (not for one being stopped).
   */
  private onCrash(client: LanguageClient | undefined): void {
    if (!client || client !== this.client || this.crashed.has(client)) return;
    this.crashed.add(client);
    const now = Date.now();
    const delay = restartDelayMs(this.crashes, now);
    this.crashes.push(now);
    if (delay === undefined) {
      this.show({ state: 'error', error: 'the server crashed repeatedly' });
      const logFile = (get('logFile') as string | null | undefined) || '';
      const actions = logFile ? ['Show Log', 'Open Log File', 'Restart'] : ['Show Log', 'Restart'];
      void vscode.window
        .showErrorMessage(
          `Parafill: the server crashed ${this.crashes.length} times and stays stopped. ` +
            (this.stderrTail.length ? `Its last output: ${this.stderrTail.join(' | ')}` : 'See the log.'),
          ...actions,
        )
        .then((choice) => {
          if (choice === 'Show Log') this.output.show();
          if (choice === 'Open Log File') void vscode.window.showTextDocument(vscode.Uri.file(logFile));
          if (choice === 'Restart') void this.restart();
        });
      return;
    }
    this.output.appendLine(`Parafill server exited; restarting in ${delay} ms`);
    this.show({ state: 'starting' });
    this.restartTimer = setTimeout(() => void this.start(), delay);
  }

  private keepStderr(text: string): void {
    this.stderrTail.push(...text.split('\n').filter((l) => l.trim()));
    this.stderrTail = this.stderrTail.slice(-STDERR_TAIL_LINES);
  }

  /** Restart on request: forget earlier crashes. */
  async restart(): Promise<void> {
    this.crashes = [];
    await this.start();
  }

  async status(): Promise<ServerStatus> {
    const client = this.client;
    if (!client || client.state !== State.Running) return this.lastStatus;
    try {
      return (await client.sendRequest(STATUS_REQUEST, {})) as ServerStatus;
    } catch (e) {
      return { state: 'error', error: String(e) };
    }
  }

  /**
   * How the last suggestion in a document was denoised (`parafill/steps`): null when it has
   * none, undefined when the server is not running.
   */
  async steps(document: vscode.TextDocument): Promise<StepsResult | null | undefined> {
    const client = this.client;
    if (!client || client.state !== State.Running) return undefined;
    const uri = client.code2ProtocolConverter.asUri(document.uri);
    return (await client.sendRequest(STEPS_REQUEST, { uri })) as StepsResult | null;
  }

  /** Fills a range of a document, or every `<|fill|>` marker when range is omitted. */
  async fill(document: vscode.TextDocument, range?: vscode.Range): Promise<void> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      void vscode.window.showWarningMessage('Parafill: the server is not running.');
      return;
    }
    const args: Record<string, unknown> = { uri: client.code2ProtocolConverter.asUri(document.uri) };
    if (range) args.range = client.code2ProtocolConverter.asRange(range);
    await client.sendRequest(ExecuteCommandRequest.type, { command: FILL_COMMAND, arguments: [args] });
  }

  private async poll(): Promise<void> {
    if (this.client?.state === State.Running) this.show(await this.status());
  }

  private show(status: ServerStatus): void {
    this.lastStatus = status;
    const view = statusView(status);
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip;
    this.statusItem.backgroundColor = view.isError
      ? new vscode.ThemeColor('statusBarItem.errorBackground')
      : undefined;
    this.statusItem.show();
  }

  dispose(): void {
    clearInterval(this.poller);
    void this.stop();
  }
}
