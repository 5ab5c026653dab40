import { makeHostContext } from "../core/host-context.js";
import { runnerOf } from "./runner-of.js";
export function hostContextOf(program) {
    return () => {
        const runner = runnerOf(program);
        return makeHostContext(runner.settings, runner);
    };
}
