// A shim daemon logs an uncaught exception or an unhandled rejection and keeps serving (one
// bad request must not take every container of its pod down). Such a line is still a bug:
// tests read daemon logs for these messages and fail on them (daemonFaultLines).

export const UNCAUGHT_EXCEPTION_MSG = 'uncaught exception (daemon keeps serving)';
export const UNHANDLED_REJECTION_MSG = 'unhandled rejection (daemon keeps serving)';

/** The lines of a daemon log (or of containerd's, which carries the shims') that report one. */
export function daemonFaultLines(logText: string): string[] {
  return logText.split('\n').filter((line) => line.includes(UNCAUGHT_EXCEPTION_MSG) || line.includes(UNHANDLED_REJECTION_MSG));
}
