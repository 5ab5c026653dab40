// guestfish: one appliance launch per operation. A script is built as text (guestfish's own command
// language, not a shell) and fed on standard input.
import type { Command } from './runner.ts';

/** Quotes a guestfish argument (double quotes; backslash escapes). */
export function fishQuote(word: string): string {
  if (/^[A-Za-z0-9_/.:,=+-]+$/.test(word)) return word;
  return `"${word.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export function fishLine(...words: string[]): string {
  return words.map(fishQuote).join(' ');
}

export function guestfishCommand(script: string[]): Command {
  return { tool: 'guestfish', args: ['--no-progress-bars'], input: `${script.join('\n')}\n`, mutates: true };
}

/** guestfish reading commands in batches from a session (see Runner.startSession). */
export function guestfishSessionCommand(): Command {
  return { tool: 'guestfish', args: ['--no-progress-bars'], mutates: false };
}
