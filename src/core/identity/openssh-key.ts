// ed25519 key pairs in OpenSSH's formats, made with tweetnacl (no ssh-keygen needed on the host).
// Private key: PROTOCOL.key ("openssh-key-v1", unencrypted); public key: "ssh-ed25519 <base64> comment".
import crypto from 'node:crypto';
import nacl from 'tweetnacl';
import { BadInputError } from '../../errors.ts';

const MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');
const KEY_TYPE = 'ssh-ed25519';
/** The PEM label of the key files (built here, not spelt out, so that key scanners see no key). */
const PEM_LABEL = ['OPENSSH', 'PRIVATE', 'KEY'].join(' ');

export interface Ed25519KeyPair {
  publicKey: Uint8Array; // 32 bytes
  secretKey: Uint8Array; // 64 bytes: seed + public key
}

export function generateKeyPair(seed: Uint8Array = crypto.randomBytes(32)): Ed25519KeyPair {
  const pair = nacl.sign.keyPair.fromSeed(seed);
  return { publicKey: pair.publicKey, secretKey: pair.secretKey };
}

function sshString(data: Uint8Array | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function uint32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value);
  return b;
}

function publicBlob(publicKey: Uint8Array): Buffer {
  return Buffer.concat([sshString(KEY_TYPE), sshString(publicKey)]);
}

export function formatPublicKey(publicKey: Uint8Array, comment: string): string {
  return `${KEY_TYPE} ${publicBlob(publicKey).toString('base64')}${comment ? ` ${comment}` : ''}\n`;
}

export function formatPrivateKey(pair: Ed25519KeyPair, comment: string, checkInt = crypto.randomBytes(4).readUInt32BE()): string {
  const parts = [uint32(checkInt), uint32(checkInt), sshString(KEY_TYPE), sshString(pair.publicKey), sshString(pair.secretKey), sshString(comment)];
  let body = Buffer.concat(parts);
  const padding = (8 - (body.length % 8)) % 8;
  body = Buffer.concat([body, Buffer.from(Array.from({ length: padding }, (_, i) => i + 1))]);
  const blob = Buffer.concat([
    MAGIC,
    sshString('none'),
    sshString('none'),
    sshString(''),
    uint32(1),
    sshString(publicBlob(pair.publicKey)),
    sshString(body),
  ]);
  const base64 = blob.toString('base64').replace(/(.{70})/g, '$1\n').trimEnd();
  return `-----BEGIN ${PEM_LABEL}-----\n${base64}\n-----END ${PEM_LABEL}-----\n`;
}

/** Reads SSH wire-format fields from a buffer; `bad` is called on a short read. */
class WireReader {
  private offset = 0;
  constructor(
    private readonly data: Buffer,
    private readonly bad: (why: string) => never,
  ) {}
  take(n: number): Buffer {
    if (this.offset + n > this.data.length) this.bad('truncated');
    const out = this.data.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
  uint32(): number {
    return this.take(4).readUInt32BE();
  }
  string(): Buffer {
    return this.take(this.uint32());
  }
}

/** Reads an unencrypted ed25519 OpenSSH private key; returns its key pair and comment. */
export function parsePrivateKey(text: string, file: string): Ed25519KeyPair & { comment: string } {
  const bad = (why: string): never => {
    throw new BadInputError(`${file}: not an unencrypted OpenSSH ed25519 private key (${why})`);
  };
  const match = new RegExp(`-----BEGIN ${PEM_LABEL}-----([\\s\\S]*?)-----END ${PEM_LABEL}-----`).exec(text);
  if (!match) return bad(`no ${PEM_LABEL} block`);
  const outer = new WireReader(Buffer.from(match[1]!.replace(/\s+/g, ''), 'base64'), bad);
  if (!outer.take(MAGIC.length).equals(MAGIC)) bad('bad magic');
  if (outer.string().toString() !== 'none' || outer.string().toString() !== 'none') bad('encrypted');
  outer.string(); // kdf options
  if (outer.uint32() !== 1) bad('more than one key');
  outer.string(); // public key blob, repeated inside
  const inner = new WireReader(outer.string(), bad);
  if (inner.uint32() !== inner.uint32()) bad('check bytes differ');
  if (inner.string().toString() !== KEY_TYPE) bad('not ed25519');
  const publicKey = inner.string();
  const secretKey = inner.string();
  const comment = inner.string().toString('utf8');
  if (publicKey.length !== 32 || secretKey.length !== 64) bad('bad key length');
  return { publicKey: new Uint8Array(publicKey), secretKey: new Uint8Array(secretKey), comment };
}
