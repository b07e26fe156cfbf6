// The guest's console output to the host never blocks a vCPU: the serial port and
// virtio-console write into a pipe the shim reads (into a capped log); when that pipe is full
// (the reader lags), the device drops and counts, and says so in the output once it fits again.
// Each test writes from a thread standing in for the vCPU and fails, instead of hanging, when
// that thread does not finish in time (the pipe is drained afterwards to let it go).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "devices/serial.h"
#include "devices/virtio/console.h"
#include "harness.h"
#include "test_framework.h"

using namespace smolvm::virtio;
using namespace vtest;
using smolvm::UniqueFd;

namespace {

constexpr auto kVcpuDeadline = std::chrono::seconds(5);

// A blocking pipe, as the shim hands it over (the device must make its end non-blocking).
struct Pipe {
  UniqueFd read_end, write_end;
  Pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
  }
  // What the pipe holds (the device may have enlarged it).
  size_t Capacity() const { return static_cast<size_t>(fcntl(read_end.get(), F_GETPIPE_SZ)); }
  // Everything in the pipe now (the read end made non-blocking for this).
  std::string Drain() {
    fcntl(read_end.get(), F_SETFL, fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);
    std::string all;
    char buffer[65536];
    for (;;) {
      const ssize_t n = read(read_end.get(), buffer, sizeof buffer);
      if (n <= 0) break;
      all.append(buffer, static_cast<size_t>(n));
    }
    return all;
  }
};

// Runs `vcpu` on its own thread; true when it finished within the deadline. A thread stuck in
// a blocking write is released by draining the pipe (the test has failed by then).
bool FinishesInTime(Pipe& pipe, const std::function<void()>& vcpu) {
  std::packaged_task<void()> task(vcpu);
  std::future<void> done = task.get_future();
  std::thread thread(std::move(task));
  const bool in_time = done.wait_for(kVcpuDeadline) == std::future_status::ready;
  while (done.wait_for(std::chrono::milliseconds(10)) != std::future_status::ready) pipe.Drain();
  thread.join();
  return in_time;
}

}  // namespace

TEST(serial_full_output_pipe_never_blocks_the_vcpu) {
  Pipe pipe;
  smolvm::Serial serial(std::make_shared<CountingIrq>(), pipe.write_end.get());
  const size_t capacity = pipe.Capacity();
  CHECK(capacity >= 64 * 1024);
  const size_t extra = 10000;
  const bool in_time = FinishesInTime(pipe, [&] {
    const uint8_t byte = 'x';
    for (size_t i = 0; i < capacity + extra; ++i) serial.Write(0, &byte, 1);
  });
  REQUIRE(in_time);
  CHECK_EQ(serial.dropped_bytes(), static_cast<uint64_t>(extra));
  const std::string kept = pipe.Drain();
  CHECK_EQ(kept.size(), capacity);
  CHECK(kept.find_first_not_of('x') == std::string::npos);
  // Room again: the next byte comes after a notice with the count.
  const uint8_t byte = 'y';
  serial.Write(0, &byte, 1);
  const std::string next = pipe.Drain();
  CHECK(next.find("[smolvm-vmm: 10000 bytes of serial console output dropped") != std::string::npos);
  CHECK(!next.empty() && next.back() == 'y');
  // The notice went once: later output is the guest's alone.
  serial.Write(0, &byte, 1);
  CHECK_EQ(pipe.Drain(), std::string("y"));
}

TEST(serial_output_to_a_closed_reader_never_blocks_or_kills) {
  signal(SIGPIPE, SIG_IGN);  // as in smolvm-vmm's main
  Pipe pipe;
  pipe.read_end.reset();  // the shim died
  smolvm::Serial serial(std::make_shared<CountingIrq>(), pipe.write_end.get());
  CHECK(FinishesInTime(pipe, [&] {
    const uint8_t byte = 'x';
    for (int i = 0; i < 100000; ++i) serial.Write(0, &byte, 1);
  }));
}

TEST(virtio_console_full_output_pipe_never_blocks_the_vcpu) {
  Pipe pipe;
  auto console = MakeVirtioConsole(UniqueFd(dup(pipe.write_end.get())));
  pipe.write_end.reset();  // the device holds the only write end, as in the VMM
  Harness h(console);
  REQUIRE(h.Init() & kStatusDriverOk);
  const uint32_t chunk = 32 * 1024;
  const size_t capacity = pipe.Capacity();
  const int chunks = static_cast<int>(capacity / chunk) + 2;
  GuestAddress buf = h.Alloc(chunk);
  h.Fill(buf, std::string(chunk, 'x').data(), chunk);
  const bool in_time = FinishesInTime(pipe, [&] {
    for (int i = 0; i < chunks; ++i) {
      h.queues[kConsoleTransmitQueue]->Add({{buf, chunk, false}});
      h.Notify(kConsoleTransmitQueue);
    }
  });
  REQUIRE(in_time);
  int used = 0;
  while (h.queues[kConsoleTransmitQueue]->PopUsed()) ++used;
  CHECK_EQ(used, chunks);  // every buffer went back to the guest
  CHECK_EQ(console->dropped_bytes(), static_cast<uint64_t>(chunks) * chunk - capacity);
  CHECK_EQ(pipe.Drain().size(), capacity);
  h.Fill(buf, "after", 5);
  h.queues[kConsoleTransmitQueue]->Add({{buf, 5, false}});
  h.Notify(kConsoleTransmitQueue);
  const std::string next = pipe.Drain();
  CHECK(next.find("bytes of virtio-console output dropped") != std::string::npos);
  CHECK(next.size() >= 5 && next.substr(next.size() - 5) == "after");
}
