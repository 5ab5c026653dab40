import { InvalidArgumentError } from 'commander';
/** A parser for an option counted in whole seconds, `min` or more. */
export function wholeSeconds(min) {
    return (value) => {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < min)
            throw new InvalidArgumentError(`expected a whole number of seconds, ${min} or more`);
        return n;
    };
}
