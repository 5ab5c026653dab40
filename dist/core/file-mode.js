/** A file mode's permission bits as four octal digits, the form identity-files.json uses ("0644"). */
export function octalMode(mode) {
    return (mode & 0o7777).toString(8).padStart(4, '0');
}
