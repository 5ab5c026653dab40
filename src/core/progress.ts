// Progress on long work, on stderr: each step announced as it starts ("[3/6] title"), and on a
// terminal the elapsed time of a step that takes more than a moment, redrawn in place and cleared
// when the step ends. Without a terminal: plain lines, no control characters at all. --quiet: no
// progress at all (errors are not progress: the CLI prints them). Core code reports through this
// interface and never writes to the terminal itself; the CLI makes the one reporter
// (src/commands/runner-of.ts) and hands it to the runner (Runner.progress).

/** Where a step stands in its plan: shown as [index/total]. */
export interface StepPosition {
  index: number;
  total: number;
}

export interface Progress {
  /** A plan of `total` steps begins: one line naming it (its steps follow, numbered). */
  plan(title: string, total: number): void;
  /**
   * Runs `work` as one step: announced as it starts, its elapsed time shown on a terminal while it
   * runs; the step ends when `work` settles (its result or error is passed on unchanged).
   */
  step<T>(title: string, work: () => Promise<T>, position?: StepPosition): Promise<T>;
  /** A line for stderr that is not progress (a command echoed by --verbose): written even under --quiet. */
  line(text: string): void;
  /** A line of a command's own log as it comes (nix build's stderr); nothing under --quiet. */
  commandOutput(line: string): void;
}

export interface ProgressOptions {
  /** Nothing but line() is written (--quiet, --dry-run). */
  quiet: boolean;
  /** stderr is a terminal: the current step is redrawn in place. */
  tty: boolean;
  /** Writes to stderr. */
  write: (text: string) => void;
  /** The terminal's width, to keep the redrawn line on one row. */
  columns?: () => number | undefined;
  /** How long a step runs before its elapsed time is shown (ms). */
  momentMs?: number;
  /** How often the elapsed time is redrawn (ms). */
  intervalMs?: number;
  now?: () => number;
}

/** Redraws the current line: carriage return, then erase to the end of the line. */
const REDRAW = '\r\x1b[K';
const SPINNER = ['|', '/', '-', '\\'];

/**
 * Text for stderr without control characters (but tabs): escape sequences and carriage returns a
 * command printed, or a byte in a file name, cannot move the cursor or garble the step line.
 */
export function plainText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]/g, '').replace(/[\x00-\x08\x0a-\x1f\x7f\x80-\x9f]/g, '');
}

/** "0.4s", "3.4s", "12s", "2m05s". */
export function formatElapsed(ms: number): string {
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
}

interface Active {
  text: string;
  started: number;
}

export function createProgress(options: ProgressOptions): Progress {
  const { quiet, tty, write } = options;
  const now = options.now ?? Date.now;
  const momentMs = options.momentMs ?? 700;
  const intervalMs = options.intervalMs ?? 125;
  /** Steps that have started and not ended, innermost last; on a terminal the last one is drawn. */
  const active: Active[] = [];
  /** True while a step's line is on the screen without its newline (terminal only). */
  let drawn = false;
  let frame = 0;
  let timer: ReturnType<typeof setInterval> | undefined;

  const fit = (text: string) => {
    const width = options.columns?.();
    return width && width > 1 && text.length > width - 1 ? `${text.slice(0, Math.max(0, width - 2))}…` : text;
  };
  /** Draws the innermost step; `tick` (the timer): only once it has run for a moment, the spinner turned. */
  const draw = (tick = false) => {
    const top = active[active.length - 1];
    if (!top) return;
    const elapsed = now() - top.started;
    if (tick && elapsed < momentMs) return;
    if (tick) frame += 1;
    const live = elapsed >= momentMs ? `${top.text} ${SPINNER[frame % SPINNER.length]} ${formatElapsed(elapsed)}` : top.text;
    write(`${drawn ? REDRAW : ''}${fit(live)}`);
    drawn = true;
  };
  /** Takes the drawn step line off the screen (terminal), so that other output starts on a clean line. */
  const clear = () => {
    if (drawn) write(REDRAW);
    drawn = false;
  };
  const startTimer = () => {
    if (timer || !tty) return;
    timer = setInterval(() => draw(true), intervalMs);
    // Never keeps ivm alive.
    timer.unref?.();
  };
  const stopTimer = () => {
    if (timer && active.length === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  /** Writes whole lines, the current step's line (terminal) moved below them. */
  const lines = (text: string) => {
    if (!tty) return write(`${text}\n`);
    clear();
    write(`${text}\n`);
    draw();
  };

  return {
    plan(title, total) {
      if (quiet) return;
      lines(plainText(`${title}: ${total} step${total === 1 ? '' : 's'}`));
    },
    async step(title, work, position) {
      if (quiet) return work();
      const text = plainText(position ? `[${position.index}/${position.total}] ${title}` : title);
      const entry: Active = { text, started: now() };
      if (!tty) {
        write(`${text}\n`);
        return work();
      }
      // A step inside a step: the outer one's line stays, as it was, above the inner one's.
      const outer = active[active.length - 1];
      if (drawn && outer) write(`${REDRAW}${outer.text}\n`);
      drawn = false;
      active.push(entry);
      draw();
      startTimer();
      const end = (outcome: string) => {
        const at = active.indexOf(entry);
        active.splice(at, 1);
        stopTimer();
        if (at === active.length) {
          // It was the one drawn: its final line replaces the live one.
          clear();
          const elapsed = now() - entry.started;
          write(`${text}${outcome}${elapsed >= momentMs ? ` (${formatElapsed(elapsed)})` : ''}\n`);
          draw();
        }
      };
      try {
        const result = await work();
        end('');
        return result;
      } catch (error) {
        end(' failed');
        throw error;
      }
    },
    line(text) {
      lines(text.split('\n').map(plainText).join('\n'));
    },
    commandOutput(line) {
      if (quiet) return;
      lines(plainText(line));
    },
  };
}
