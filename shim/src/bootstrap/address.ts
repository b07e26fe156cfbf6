// The shim's socket address, as containerd's shim library computes it: a hash of containerd's
// address, the namespace and the group, in containerd's socket dir. Short and deterministic,
// so that `start` for another container of the same group finds the same daemon.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

export const SOCKET_DIR = '/run/containerd/s';
/** sun_path is 108 bytes with the NUL; containerd keeps shim paths to 106. */
export const MAX_SOCKET_PATH = 106;

export function socketPath(containerdAddress: string, namespace: string, group: string, dir = SOCKET_DIR): string {
  const digest = createHash('sha256').update(path.join(containerdAddress, namespace, group)).digest('hex');
  const p = path.join(dir, digest);
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    throw new Error(`shim socket path ${p} is longer than ${MAX_SOCKET_PATH} bytes`);
  }
  return p;
}

export const toAddress = (socket: string): string => `unix://${socket}`;

export function fromAddress(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : address;
}

/** True when something accepts connections on the socket (a live daemon). */
export function socketAnswers(socket: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    if (!fs.existsSync(socket)) return resolve(false);
    const conn = net.connect(socket);
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      conn.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    conn.once('connect', () => done(true));
    conn.once('error', () => done(false));
  });
}

/** Removes a socket file nobody listens on any more. */
export function removeStaleSocket(socket: string): void {
  try {
    if (fs.lstatSync(socket).isSocket()) fs.unlinkSync(socket);
  } catch {
    // absent: nothing to do
  }
}
