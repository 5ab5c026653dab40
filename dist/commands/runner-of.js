import { Runner } from "../host/runner.js";
import { readSettings } from "../host/settings.js";
import { checkImageFolders } from "../core/base-dir.js";
export function runnerOf(program) {
    const options = program.opts();
    const settings = readSettings();
    checkImageFolders(settings);
    return new Runner(settings, { dryRun: Boolean(options.dryRun), verbose: Boolean(options.verbose) });
}
