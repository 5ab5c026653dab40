// Quoting for display only: ivm never runs a shell string, but dry-run and --verbose print commands
// so that a user can paste them into a shell.
const SAFE = /^[A-Za-z0-9_/.:=,@%+-]+$/;
export function shellQuote(word) {
    if (word.length > 0 && SAFE.test(word))
        return word;
    return `'${word.replace(/'/g, `'\\''`)}'`;
}
export function shellLine(argv) {
    return argv.map(shellQuote).join(' ');
}
/** A command with standard input, printed as a here-document. */
export function withHereDoc(line, input) {
    const body = input.endsWith('\n') ? input : `${input}\n`;
    return `${line} <<'IVM_EOF'\n${body}IVM_EOF`;
}
