// A context for the host commands (host setup, doctor, net, ip, ssh, wait): like Context, but the
// project is optional, since the host can be set up and checked outside a repository.
import { BadInputError } from "../errors.js";
import { findProject } from "./project.js";
/** The project when there is one (undefined outside a repository); other errors propagate. */
export function optionalProject(env = process.env) {
    try {
        return findProject(env);
    }
    catch (error) {
        if (error instanceof BadInputError && !env.IVM_ROOT)
            return undefined;
        throw error;
    }
}
export function makeHostContext(settings, runner) {
    return { project: optionalProject(), settings, runner, say: (line) => process.stdout.write(`${line}\n`) };
}
/** The project, or the error a command that needs one gives. */
export function requireProject(ctx) {
    return ctx.project ?? findProject();
}
