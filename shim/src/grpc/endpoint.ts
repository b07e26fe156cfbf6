// The shim daemon's one socket, for every containerd version: each connection is ttrpc
// (containerd.task.v2.Task for 1.6/1.7 and bootstrap version 2; containerd.task.v3.Task for
// version 3 over ttrpc) or gRPC (containerd.task.v3.Task: 2.x, and 1.7 when told "grpc").
// The first byte tells which: a gRPC client opens with the HTTP/2 preface "PRI * HTTP/2.0…",
// while a ttrpc frame opens with a big-endian length of at most 4 MiB, whose first byte is 0.
// So the daemon needs no record of what `start` answered, and a reused daemon always fits.
// One TaskService implementation serves all three, through the same handler object.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { messageOf } from '../errdefs';
import { TaskDefinition } from '../gen/containerd/task/v2/shim';
import { TaskDefinition as TaskV3Definition } from '../gen/containerd/task/v3/shim';
import { type Logger, stderrLogger } from '../log';
import { TtrpcServer } from '../ttrpc/server';
import type { CallContext } from '../ttrpc/service';
import type { GrpcServer } from './server';

interface Decoder { decode(input: Uint8Array): unknown }

/** Handlers by method key, typed by each method's request and response messages. */
type HandlersFor<M extends Record<string, { requestType: Decoder; responseType: Decoder }>> = {
  [K in keyof M]?: (
    request: ReturnType<M[K]['requestType']['decode']>,
    ctx: CallContext,
  ) => Promise<ReturnType<M[K]['responseType']['decode']>>;
};

/** The task service's handlers, written once against task v2. */
export type TaskHandlers = HandlersFor<typeof TaskDefinition.methods>;
type TaskV3Handlers = HandlersFor<typeof TaskV3Definition.methods>;

/** First byte of the HTTP/2 client connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"). */
const HTTP2_PREFACE_FIRST_BYTE = 0x50;

export interface TaskEndpointOptions {
  readonly logger?: Logger;
}

export interface EndpointCloseOptions {
  /** How long calls in flight may take before connections are cut. */
  readonly timeoutMs?: number;
}

export class TaskEndpoint {
  readonly ttrpc: TtrpcServer;
  private readonly logger: Logger;
  private grpc: Promise<GrpcServer> | undefined;
  private handlers: TaskV3Handlers | undefined;
  private listener: net.Server | undefined;
  private readonly unrouted = new Set<net.Socket>();
  private closing = false;

  constructor(options: TaskEndpointOptions = {}) {
    this.logger = options.logger ?? stderrLogger('warn', { component: 'endpoint' });
    this.ttrpc = new TtrpcServer({ logger: this.logger });
  }

  /** Registers the task service: task v2 and v3 over ttrpc now, task v3 over gRPC on first use. */
  registerTask(handlers: TaskHandlers): void {
    if (this.handlers) throw new Error('endpoint: task service registered twice');
    // The adapter between the versions is this assignment: it compiles only while every v3
    // request fits the v2 handler and every v2 response is a valid v3 response.
    const v3: TaskV3Handlers = handlers;
    this.handlers = v3;
    this.ttrpc.register(TaskDefinition, handlers);
    this.ttrpc.register(TaskV3Definition, v3);
  }

  /** Listens on a unix socket path, mode 0600. Fails if the path is taken. */
  async listen(socketPath: string): Promise<void> {
    if (this.closing) throw new Error('endpoint: closed');
    if (this.listener) throw new Error('endpoint: already listening');
    const listener = net.createServer((socket) => this.route(socket));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new Error(`cannot listen on ${socketPath}: ${err.code ?? ''} ${err.message}`.trim()));
      };
      listener.once('error', onError);
      listener.listen(socketPath, () => {
        listener.off('error', onError);
        resolve();
      });
    });
    try {
      fs.chmodSync(socketPath, 0o600);
    } catch (err) {
      listener.close();
      throw new Error(`cannot chmod ${socketPath} to 0600: ${messageOf(err)}`);
    }
    listener.on('error', (err) => this.logger.error(`endpoint: listener error: ${err.message}`));
    this.listener = listener;
  }

  /** Stops accepting, lets calls in flight finish for up to `timeoutMs`, closes every connection. */
  async close(options: EndpointCloseOptions = {}): Promise<void> {
    this.closing = true;
    const listenerClosed = this.listener
      ? new Promise<void>((resolve) => this.listener!.close(() => resolve()))
      : Promise.resolve();
    for (const socket of this.unrouted) socket.destroy();
    this.unrouted.clear();
    const grpc = this.grpc ? this.grpc.then((server) => server.close(options), () => undefined) : Promise.resolve();
    await Promise.all([listenerClosed, grpc, this.ttrpc.close({ timeoutMs: options.timeoutMs })]);
  }

  private route(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.unrouted.add(socket);
    // Until a protocol owns the socket, its errors (a peer that connects and resets) end here.
    const onEarlyError = (): void => { socket.destroy(); };
    const onEarlyClose = (): void => { this.unrouted.delete(socket); };
    socket.on('error', onEarlyError);
    socket.once('close', onEarlyClose);
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      socket.off('error', onEarlyError);
      socket.off('close', onEarlyClose);
      this.unrouted.delete(socket);
      if (chunk[0] === HTTP2_PREFACE_FIRST_BYTE) this.serveGrpc(socket);
      else {
        this.ttrpc.serve(socket);
        socket.resume();
      }
    });
  }

  private serveGrpc(socket: net.Socket): void {
    this.grpcServer().then(
      (server) => server.serveConnection(socket),
      (err: unknown) => {
        this.logger.error(`endpoint: gRPC unavailable: ${messageOf(err)}`);
        socket.destroy();
      },
    );
  }

  /** grpc-js is loaded on the first gRPC connection only: a ttrpc-only daemon never pays for it. */
  private grpcServer(): Promise<GrpcServer> {
    if (!this.grpc) {
      this.grpc = import('./server').then(({ GrpcServer }) => {
        const server = new GrpcServer({ logger: this.logger });
        if (this.handlers) server.register(TaskV3Definition, this.handlers);
        return server;
      });
    }
    return this.grpc;
  }
}
