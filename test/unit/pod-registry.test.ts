// PodRegistry with a stand-in for the pod VM: the first container boots, the others wait for
// that boot and join; a failed boot is forgotten (the next container boots afresh); the last
// container to leave destroys the VM, and one arriving after that boots a new one; a container
// arriving while the last one leaves never gets the VM being torn down.
import * as assert from 'node:assert/strict';
import type { PodVm } from '../../shim/src/vm/pod-vm';
import { PodRegistry, SANDBOX_ID_ANNOTATION } from '../../shim/src/vm/pods';

class FakePod {
  readonly members = new Set<string>();
  destroyed = 0;
  constructor(readonly name: string) {}
  get memberCount(): number { return this.members.size; }
  reserve(member: string): void {
    if (this.destroyed) throw new Error(`${this.name} is destroyed`);
    this.members.add(member);
  }
  async release(member: string): Promise<void> { this.members.delete(member); }
  async destroy(): Promise<void> { this.destroyed += 1; }
}

const asPod = (fake: FakePod): PodVm => fake as unknown as PodVm;

describe('PodRegistry', () => {
  it('reads the CRI sandbox id annotation', () => {
    assert.equal(PodRegistry.podIdOf({ [SANDBOX_ID_ANNOTATION]: 'abc' }), 'abc');
    assert.equal(PodRegistry.podIdOf({ [SANDBOX_ID_ANNOTATION]: '' }), null);
    assert.equal(PodRegistry.podIdOf(undefined), null);
  });

  it('boots once for concurrent joins and destroys with the last leave', async () => {
    const registry = new PodRegistry();
    let boots = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const pod = new FakePod('p');
    const boot = async (): Promise<PodVm> => { boots += 1; await gate; return asPod(pod); };
    const joins = [registry.join('s', 'a', boot), registry.join('s', 'b', boot)];
    release();
    const [a, b] = await Promise.all(joins);
    assert.equal(boots, 1);
    assert.equal(a, b);
    assert.deepEqual([...pod.members].sort(), ['a', 'b']);
    await registry.leave('s', 'a');
    assert.equal(pod.destroyed, 0);
    await registry.leave('s', 'b');
    assert.equal(pod.destroyed, 1);
    assert.equal(registry.size, 0);
    const next = new FakePod('q');
    assert.equal(await registry.join('s', 'c', async () => asPod(next)), asPod(next), 'a new VM after the last left');
  });

  it('leaveGuest: members take their container out of the guest; the last one only ends the VM', async () => {
    const registry = new PodRegistry();
    const pod = new FakePod('p');
    await registry.join('s', 'a', async () => asPod(pod));
    await registry.join('s', 'b', async () => asPod(pod));
    const removed: string[] = [];
    await registry.leaveGuest('s', 'a', async () => { removed.push('a'); });
    assert.deepEqual(removed, ['a'], 'a member that leaves others behind is removed from the guest');
    assert.deepEqual([...pod.members], ['b'], 'and gives its slots back');
    assert.equal(pod.destroyed, 0);
    // The last member: no guest removal, no slot release, the VM goes at once.
    const leaving = registry.leaveGuest('s', 'b', async () => { removed.push('b'); });
    assert.equal(registry.membersOf('s'), 0, 'forgotten synchronously: a new container boots its own VM');
    await leaving;
    assert.deepEqual(removed, ['a']);
    assert.deepEqual([...pod.members], ['b']);
    assert.equal(pod.destroyed, 1);
    await registry.leaveGuest('s', 'b', async () => { removed.push('again'); });
    assert.equal(pod.destroyed, 1, 'leaving twice is harmless');
  });

  it('forgets a failed boot: every waiting container gets the error, the next one boots again', async () => {
    const registry = new PodRegistry();
    const failing = async (): Promise<PodVm> => { throw new Error('boot failed: no kernel'); };
    await Promise.all([
      assert.rejects(registry.join('s', 'a', failing), /no kernel/),
      assert.rejects(registry.join('s', 'b', failing), /no kernel/),
    ]);
    assert.equal(registry.size, 0);
    const pod = new FakePod('p');
    assert.equal(await registry.join('s', 'c', async () => asPod(pod)), asPod(pod));
  });

  it('a refused reservation leaves the others in place and destroys a VM nobody holds', async () => {
    const registry = new PodRegistry();
    const pod = new FakePod('p');
    await registry.join('s', 'a', async () => asPod(pod));
    pod.reserve = () => { throw new Error('pod s is full'); };
    await assert.rejects(registry.join('s', 'b', async () => asPod(pod)), /full/);
    assert.equal(registry.membersOf('s'), 1);
    assert.equal(pod.destroyed, 0);
    const lonely = new FakePod('l');
    lonely.reserve = () => { throw new Error('refused'); };
    await assert.rejects(registry.join('t', 'x', async () => asPod(lonely)), /refused/);
    assert.equal(lonely.destroyed, 1, 'a VM booted for a container that could not join is not leaked');
    assert.equal(registry.membersOf('t'), 0);
  });
});
