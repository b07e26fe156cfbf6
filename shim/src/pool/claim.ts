// The claimer's side of the warm pool (protocol.ts), for `start`: the spares in age order,
// the first that answers `ok` serves this container. Kept light: `start` runs per container.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { CLAIM_TIMEOUT_MS, decodeAnswer, encodeClaim, type ClaimAnswer, type ClaimRequest } from './protocol';

/** One claim on one spare's socket: its answer, or `refused` with what went wrong. */
export function claimOne(socket: string, request: Buffer, timeoutMs = CLAIM_TIMEOUT_MS): Promise<ClaimAnswer> {
  return new Promise((resolve) => {
    let text = '';
    let settled = false;
    const conn = net.connect(socket);
    const done = (answer: ClaimAnswer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done({ kind: 'refused', reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(request));
    conn.on('data', (chunk: string) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl >= 0) done(decodeAnswer(text.slice(0, nl + 1)));
      else if (text.length > 4096) done({ kind: 'refused', reason: 'answer too long' });
    });
    conn.on('end', () => done(decodeAnswer(text)));
    conn.on('error', (err) => done({ kind: 'refused', reason: err.message }));
  });
}

export interface ClaimResult {
  address: string;
  spare: string;
}

/**
 * Claims the oldest spare under `poolDir` that takes this container; null when none does
 * (no pool, all busy, or all refused: `start` then spawns a daemon as usual). `onRefused`
 * hears why each spare that answered said no.
 */
export async function claimSpare(poolDir: string, request: ClaimRequest, onRefused?: (spare: string, reason: string) => void): Promise<ClaimResult | null> {
  let names: string[];
  try {
    names = fs.readdirSync(poolDir).filter((n) => !n.startsWith('.') && n !== 'fill.lock').sort();
  } catch {
    return null;
  }
  const raw = encodeClaim(request);
  for (const name of names) {
    const socket = path.join(poolDir, name, 'claim.sock');
    if (!fs.existsSync(socket)) continue;
    const answer = await claimOne(socket, raw);
    if (answer.kind === 'ok') return { address: answer.address, spare: name };
    if (answer.kind === 'refused') onRefused?.(name, answer.reason);
  }
  return null;
}
