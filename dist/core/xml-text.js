// The few XML text helpers ivm needs for what virsh prints and what it defines (no XML library).
import Handlebars from 'handlebars';
/** Decodes the five predefined entities and numeric references of XML text. */
export function xmlText(text) {
    return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, ref) => {
        if (ref.startsWith('#x'))
            return String.fromCodePoint(parseInt(ref.slice(2), 16));
        if (ref.startsWith('#'))
            return String.fromCodePoint(parseInt(ref.slice(1), 10));
        return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[ref];
    });
}
/**
 * Escapes a value for XML text or an attribute in single or double quotes: the escaping the domain
 * template's {{value}}s get, so that every XML ivm writes is escaped one way.
 */
export function xmlEscape(value) {
    return Handlebars.Utils.escapeExpression(value);
}
/** The value of attribute `name` in a start tag's text, decoded. */
export function xmlAttr(tag, name) {
    const match = new RegExp(`\\b${name}\\s*=\\s*(?:'([^']*)'|"([^"]*)")`).exec(tag);
    return match ? xmlText(match[1] ?? match[2]) : undefined;
}
