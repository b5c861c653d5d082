/** Parafill for VS Code: starts the server, registers the commands and the status-bar item. */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ParafillServer } from './client';
import { statusSummary } from './policy';
import { formatSteps, STEPS_SCHEME } from './steps';

let server: ParafillServer | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('Parafill', { log: true });
  const statusItem = vscode.window.createStatusBarItem('parafill.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'Parafill';
  statusItem.command = 'parafill.showStatus';
  server = new ParafillServer(output, statusItem);
  const srv = server;
  // Read-only documents: the denoising steps and the full status, by URI path.
  const views = new Map<string, string>();
  const changed = new vscode.EventEmitter<vscode.Uri>();
  const show = async (name: string, text: string) => {
    const uri = vscode.Uri.from({ scheme: STEPS_SCHEME, path: `/${name}` });
    views.set(uri.path, text);
    changed.fire(uri);
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc, { preview: true, viewColumn: vscode.ViewColumn.Beside });
  };

  context.subscriptions.push(
    output,
    statusItem,
    srv,
    changed,
    vscode.workspace.registerTextDocumentContentProvider(STEPS_SCHEME, {
      onDidChange: changed.event,
      provideTextDocumentContent: (uri) => views.get(uri.path) ?? '',
    }),
    vscode.commands.registerCommand('parafill.fillSelection', async () => {
      const editor = vscode.window.activeTextEditor;
      if (!editor || editor.selection.isEmpty) {
        void vscode.window.showInformationMessage('Parafill: select the code to fill first.');
        return;
      }
      await srv.fill(editor.document, editor.selection);
    }),
    vscode.commands.registerCommand('parafill.fillAll', async () => {
      const editor = vscode.window.activeTextEditor;
      if (editor) await srv.fill(editor.document);
    }),
    vscode.commands.registerCommand('parafill.restart', () => srv.restart()),
    vscode.commands.registerCommand('parafill.showStatus', async () => {
      const status = await srv.status();
      const choice = await vscode.window.showInformationMessage(
        statusSummary(status),
        'Details',
        'Show Log',
        'Restart',
      );
      if (choice === 'Details') await show('Parafill status.json', JSON.stringify(status, null, 2) + '\n');
      if (choice === 'Show Log') output.show();
      if (choice === 'Restart') await srv.restart();
    }),
    vscode.commands.registerCommand('parafill.showDenoising', async () => {
      const editor = vscode.window.activeTextEditor;
      if (!editor) {
        void vscode.window.showInformationMessage('Parafill: open the file whose suggestion to show first.');
        return;
      }
      const result = await srv.steps(editor.document);
      if (result === undefined) {
        void vscode.window.showWarningMessage('Parafill: the server is not running.');
      } else if (result === null || !result.steps?.length) {
        void vscode.window.showInformationMessage('Parafill: no suggestion in this file yet.');
      } else {
        const name = path.basename(editor.document.uri.path);
        await show(`${name} (denoising)`, formatSteps(result, name));
      }
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('parafill.server') || e.affectsConfiguration('parafill.languages')) {
        void srv.restart();
      }
    }),
  );
  await srv.start();
}

export async function deactivate(): Promise<void> {
  await server?.stop();
}
