#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "devices/virtio/console.h"
#include "harness.h"
#include "test_framework.h"
#include "test_loop.h"

using namespace smolvm::virtio;
using namespace vtest;
using smolvm::UniqueFd;

TEST(console_output_reaches_host_fd) {
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  UniqueFd read_end(pipe_fds[0]);
  Harness h(MakeVirtioConsole(UniqueFd(pipe_fds[1])));
  REQUIRE(h.Init() & kStatusDriverOk);
  GuestAddress buf = h.Alloc(64);
  h.Fill(buf, "hello, ", 7);
  h.Fill(buf + 32, "host\n", 5);
  h.queues[kConsoleTransmitQueue]->Add({{buf, 7, false}, {buf + 32, 5, false}});
  h.Notify(kConsoleTransmitQueue);
  auto used = h.queues[kConsoleTransmitQueue]->PopUsed();
  CHECK(used.has_value() && used->len == 0);
  char got[16] = {};
  CHECK_EQ(read(read_end.get(), got, sizeof got), 12);
  CHECK_EQ(std::string(got), std::string("hello, host\n"));
}

TEST(console_input_only_read_when_guest_has_buffers) {
  int out_fds[2], in_fds[2];
  REQUIRE(pipe2(out_fds, O_CLOEXEC) == 0);
  REQUIRE(pipe2(in_fds, O_CLOEXEC | O_NONBLOCK) == 0);
  UniqueFd out_read(out_fds[0]), in_write(in_fds[1]);
  TestLoop loop;
  Harness h(MakeVirtioConsole(UniqueFd(out_fds[1]), UniqueFd(in_fds[0]), &loop));
  REQUIRE(h.Init() & kStatusDriverOk);
  CHECK_EQ(write(in_write.get(), "abc", 3), 3);
  loop.RunFor(20);  // no receive buffers: nothing read, nothing spins
  CHECK_EQ(loop.registered(), 0u);
  GuestAddress buf = h.Alloc(16);
  h.queues[kConsoleReceiveQueue]->Add({{buf, 16, true}});
  h.Notify(kConsoleReceiveQueue);
  auto used = h.queues[kConsoleReceiveQueue]->PopUsed();
  REQUIRE(used.has_value());
  CHECK_EQ(used->len, 3u);
  CHECK(h.Peek(buf, 3) == std::vector<uint8_t>({'a', 'b', 'c'}));
  h.queues[kConsoleReceiveQueue]->Add({{buf, 16, true}});
  h.Notify(kConsoleReceiveQueue);
  CHECK_EQ(loop.registered(), 1u);
  CHECK_EQ(write(in_write.get(), "xy", 2), 2);
  loop.RunFor(20);
  used = h.queues[kConsoleReceiveQueue]->PopUsed();
  REQUIRE(used.has_value());
  CHECK_EQ(used->len, 2u);
}
