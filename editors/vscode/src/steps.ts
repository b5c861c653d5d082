/**
 * "Parafill: Show Denoising": the text that shows a `parafill/steps` answer, the last
 * suggestion's fill after each denoising step with the slots still masked. Pure (no VS Code).
 */

export const STEPS_REQUEST = 'parafill/steps';
export const STEPS_SCHEME = 'parafill-steps';

/** What `parafill/steps` returns (null when the document has no suggestion yet). */
export interface StepsResult {
  uri?: string;
  kind?: string | null;
  steps: string[];
  fill?: string;
  suggestion?: string;
  stepsUsed?: number;
  tokens?: number;
  modelMs?: number;
  mask?: string;
  position?: { line: number; character: number };
  id?: number | null;
}

/** One labelled block: the label on its first line, continuation lines aligned under it. */
function block(label: string, text: string): string[] {
  return text.split('\n').map((line, i) => `${i === 0 ? label : ' '.repeat(label.length)} | ${line}`);
}

/** The document that replays how the suggestion in `name` was denoised, step by step. */
export function formatSteps(r: StepsResult, name: string): string {
  const where = r.position ? ` at line ${r.position.line + 1}, column ${r.position.character + 1}` : '';
  const lines = [
    `Parafill: how the last suggestion in ${name}${where} was denoised, step by step`,
    `${r.kind ?? '?'} region, ${r.stepsUsed ?? r.steps.length} steps, ${r.tokens ?? 0} tokens, ` +
      `${Math.round(r.modelMs ?? 0)} ms; ${r.mask ?? '?'} = a slot still masked`,
    '',
  ];
  r.steps.forEach((step, i) => lines.push(...block(`step ${String(i + 1).padStart(2)}`, step)));
  lines.push('', ...block('shown  ', r.suggestion ?? ''));
  return lines.join('\n') + '\n';
}
