// Defects found in review (issue 8, section 7), each proven with the real tools and no boot:
//   - gc reads each domain's disks from its XML (`virsh dumpxml`): a foreign domain whose disk path
//     holds blanks (and characters libvirt writes as entities) keeps its base. `domblklist` prints
//     such a path in a column, and gc used to take its first word, miss the disk and delete the base.
//   - qemu-img printing something other than JSON (QEMU_IMG set to a command that is not qemu-img)
//     is a clear error naming the command and the file (exit 1; gc: exit 3, deleting nothing), never
//     a stack trace.
//   - a machine named with a double dash (a legal name) is defined in libvirt: its name is never
//     put in an XML comment, where "--" is illegal.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { xmlEscape } from '../src/core/xml-text.ts';
import { cleanupDomain, ensureLibvirt, ensureNetwork, virsh } from './support/libvirt.ts';
import { makeTestProject, testMeta, type TestProject } from './support/ivm.ts';

const FOREIGN = 'ivmt-gc-blank';
/** A base's file name, as ivm build installs it (gc only ever removes such names). */
const baseName = (hash: string, name: string) => `${hash.repeat(32)}-${name}.qcow2`;
const DASHED = 'e2e--dashed';

describe('review defects (real qemu-img and libvirt, no boot)', () => {
  let project: TestProject;

  beforeAll(async () => {
    await ensureLibvirt();
    await ensureNetwork('default');
    await cleanupDomain(FOREIGN);
    await cleanupDomain(DASHED);
    project = await makeTestProject('ivm-defects-');
    fs.mkdirSync(project.baseDir, { recursive: true });
    fs.mkdirSync(project.vmDir, { recursive: true });
  });

  afterAll(async () => {
    await cleanupDomain(FOREIGN);
    await cleanupDomain(DASHED);
    await project?.remove();
  });

  it('gc keeps the base of a domain disk whose path holds blanks, & and quotes, and removes an unused base', async () => {
    const used = path.join(project.baseDir, baseName('a', 'used-base'));
    const orphan = path.join(project.baseDir, baseName('b', 'orphan-base'));
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', used, '16M']);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', orphan, '16M']);
    // Outside IVM_VM_DIR: only the domain's XML tells gc about this disk.
    const diskDir = path.join(project.root, "foreign disks & 'more'");
    fs.mkdirSync(diskDir);
    const overlay = path.join(diskDir, 'a disk.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', used, '-F', 'qcow2', overlay]);
    const xml = `<domain type='qemu'>
  <name>${FOREIGN}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${xmlEscape(overlay)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
`;
    const xmlFile = path.join(project.root, `${FOREIGN}.xml`);
    fs.writeFileSync(xmlFile, xml);
    await virsh(['define', xmlFile]);
    // What libvirt keeps: the path with its blanks, written with entities in the XML.
    expect(await virsh(['dumpxml', FOREIGN])).toContain("foreign disks &amp; &apos;more&apos;/a disk.qcow2'");
    expect(await virsh(['domblklist', '--details', FOREIGN])).toContain(overlay);

    const gc = await project.ivm(['gc']);
    expect(gc.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(gc.exitCode, gc.stderr).toBe(0);
    expect(fs.existsSync(used)).toBe(true);
    expect(gc.stdout).toContain(`kept ${used} (used by ${overlay})`);
    expect(fs.existsSync(orphan)).toBe(false);
  });

  it('qemu-img printing no JSON is a clear error naming the command and the file: status exits 1, gc 3 and deletes nothing', async () => {
    const name = 'e2e-json';
    project.addMachine(name, testMeta());
    // status reports only a machine ivm made a VM of: it needs its identity.
    expect((await project.ivm(['identity', name])).exitCode).toBe(0);
    const boot = path.join(project.vmDir, `${name}-boot.qcow2`);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', boot, '16M']);
    const keep = path.join(project.baseDir, baseName('c', 'keep-base'));
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', keep, '16M']);
    const notQemuImg = path.join(project.root, 'not-qemu-img');
    fs.writeFileSync(notQemuImg, '#!/bin/sh\necho "qemu-img: this is not JSON"\n', { mode: 0o755 });

    const status = await project.ivm(['status', name], { QEMU_IMG: notQemuImg });
    expect(status.stderr).not.toMatch(/internal error|\n\s+at |SyntaxError/);
    expect(status.stderr).toContain(`ivm: qemu-img info printed no JSON for ${boot}: it printed "qemu-img: this is not JSON"`);
    expect(status.stderr).toContain(`hint: the command was: ${notQemuImg} info --output=json -U ${boot}`);
    expect(status.exitCode).toBe(1);

    const gc = await project.ivm(['gc'], { QEMU_IMG: notQemuImg });
    expect(gc.stderr).not.toMatch(/internal error|\n\s+at |SyntaxError/);
    expect(gc.stderr).toMatch(/cannot read the backing chain of .*, so gc deletes nothing: qemu-img info --backing-chain printed no JSON for /);
    expect(gc.exitCode).toBe(3);
    expect(fs.existsSync(keep)).toBe(true);
  });

  it(`a machine named ${DASHED} is defined in libvirt (no name in an XML comment)`, async () => {
    project.addMachine(DASHED, testMeta());
    const identity = await project.ivm(['identity', DASHED]);
    expect(identity.exitCode, identity.stderr).toBe(0);
    const defined = await project.ivm(['define', DASHED]);
    expect(defined.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(defined.exitCode, defined.stderr).toBe(0);
    expect(await virsh(['dumpxml', DASHED])).toContain(`<name>${DASHED}</name>`);
    const written = fs.readFileSync(path.join(project.root, 'libvirt', `${DASHED}.xml`), 'utf8');
    for (const comment of written.match(/<!--[\s\S]*?-->/g) ?? []) expect(comment.slice(4, -3)).not.toContain('--');
  });
});
