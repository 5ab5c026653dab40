/**
 * Quotes a guestfish argument: double quotes, with backslash escapes for the backslash, the quote and
 * every control character (\\xHH), so that a name read from the guest, newlines included, is one word
 * on one line.
 */
export function fishQuote(word) {
    if (/^[A-Za-z0-9_/.:,=+-]+$/.test(word))
        return word;
    const escaped = word
        .replace(/\\/g, '\\\\')
        .replace(/"/g, '\\"')
        // eslint-disable-next-line no-control-regex
        .replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
    return `"${escaped}"`;
}
export function fishLine(...words) {
    return words.map(fishQuote).join(' ');
}
export function guestfishCommand(script) {
    return { tool: 'guestfish', args: ['--no-progress-bars'], input: `${script.join('\n')}\n`, mutates: true };
}
/** guestfish reading commands in batches from a session (see Runner.startSession). */
export function guestfishSessionCommand() {
    return { tool: 'guestfish', args: ['--no-progress-bars'], mutates: false };
}
