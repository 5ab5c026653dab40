// The boot overlay and the previous one: which base each is backed by, and the swap that moves a VM
// to another base. The swap is made so that, wherever it is cut short, <name>-boot.qcow2 exists and
// is backed by either the old or the new base: the new overlay is made beside it and put in place
// by rename; the old one is kept (hard link) as <name>-boot-prev.qcow2, the rollback target.
import { removeCommand } from "../host/files.js";
import { createOverlayCommand, imageInfo } from "../host/qemu-img.js";
import { hostFileExists, sameHostFile } from "./vm-files.js";
/** The base an overlay is backed by (absolute), or undefined when the overlay does not exist. */
export async function backingOf(runner, overlay) {
    if (!(await hostFileExists(runner, overlay)))
        return undefined;
    const top = await imageInfo(runner, overlay);
    return top['full-backing-filename'] ?? top['backing-filename'];
}
const move = (from, to) => ({ tool: 'mv', args: ['-f', '-T', from, to], mutates: true });
export async function switchBaseSteps(runner, paths, target) {
    const next = `${paths.boot}.next`;
    const previousNext = `${paths.bootPrevious}.next`;
    const steps = [
        { kind: 'run', title: 'clear what an interrupted run left', command: removeCommand(next, previousNext) },
        { kind: 'run', title: `new boot overlay backed by ${target}`, command: createOverlayCommand(target, next), undo: removeCommand(next) },
    ];
    // The temporary names must not be links either: qemu-img and ln would write through them.
    await hostFileExists(runner, next);
    await hostFileExists(runner, previousNext);
    if (await hostFileExists(runner, paths.boot)) {
        steps.push({
            kind: 'run',
            title: 'keep the current overlay for rollback',
            command: { tool: 'ln', args: ['-f', '-T', paths.boot, previousNext], mutates: true },
            undo: removeCommand(previousNext),
        });
        steps.push({ kind: 'run', title: 'put the new overlay in place', command: move(next, paths.boot), undo: move(previousNext, paths.boot) });
        steps.push({ kind: 'run', title: 'the old overlay becomes the rollback target', command: move(previousNext, paths.bootPrevious) });
    }
    else {
        steps.push({ kind: 'run', title: 'put the new overlay in place', command: move(next, paths.boot), undo: removeCommand(paths.boot) });
    }
    return steps;
}
/**
 * What a switch cut short left behind, put right before anything else is planned. The old overlay
 * waits as <name>-boot-prev.qcow2.next between "put the new overlay in place" and "the old overlay
 * becomes the rollback target": if the new overlay is in place, finish that move (else the rollback
 * target would be lost, and the file would keep its base from gc); if not, it is a second name of
 * the current overlay, and goes.
 */
export async function finishSwitchSteps(runner, paths) {
    const next = `${paths.boot}.next`;
    const previousNext = `${paths.bootPrevious}.next`;
    const steps = [];
    if (await hostFileExists(runner, previousNext)) {
        if ((await hostFileExists(runner, paths.boot)) && !(await sameHostFile(runner, previousNext, paths.boot))) {
            steps.push({ kind: 'run', title: 'finish an interrupted switch: the old overlay becomes the rollback target', command: move(previousNext, paths.bootPrevious) });
        }
        else {
            steps.push({ kind: 'run', title: 'drop the second name an interrupted switch left', command: removeCommand(previousNext) });
        }
    }
    if (await hostFileExists(runner, next))
        steps.push({ kind: 'run', title: 'drop the overlay an interrupted switch made', command: removeCommand(next) });
    return steps;
}
