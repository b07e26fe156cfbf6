// The task events and their topics. containerd decodes the Any by its bare type name
// ("containerd.events.TaskExit"), so no type.googleapis.com/ prefix.
import {
  TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
} from '../gen/containerd/events/task';
import type { Any } from '../gen/google/protobuf/any';

interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
}

function pack<T>(typeName: string, codec: Codec<T>, message: T): Any {
  return { typeUrl: `containerd.events.${typeName}`, value: Buffer.from(codec.encode(message).finish()) };
}

export const Topics = {
  create: '/tasks/create',
  start: '/tasks/start',
  exit: '/tasks/exit',
  delete: '/tasks/delete',
  execAdded: '/tasks/exec-added',
  execStarted: '/tasks/exec-started',
  oom: '/tasks/oom',
  paused: '/tasks/paused',
  resumed: '/tasks/resumed',
} as const;

export const taskCreate = (m: TaskCreate): Any => pack('TaskCreate', TaskCreate, m);
export const taskStart = (m: TaskStart): Any => pack('TaskStart', TaskStart, m);
export const taskExit = (m: TaskExit): Any => pack('TaskExit', TaskExit, m);
export const taskDelete = (m: TaskDelete): Any => pack('TaskDelete', TaskDelete, m);
export const taskExecAdded = (m: TaskExecAdded): Any => pack('TaskExecAdded', TaskExecAdded, m);
export const taskExecStarted = (m: TaskExecStarted): Any => pack('TaskExecStarted', TaskExecStarted, m);
export const taskOOM = (m: TaskOOM): Any => pack('TaskOOM', TaskOOM, m);
export const taskPaused = (m: TaskPaused): Any => pack('TaskPaused', TaskPaused, m);
export const taskResumed = (m: TaskResumed): Any => pack('TaskResumed', TaskResumed, m);
