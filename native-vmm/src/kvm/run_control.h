// Coordination between the vCPU threads of one VM and whoever pauses or stops them. A vCPU
// thread calls Checkpoint() before every KVM_RUN; the controller sets a request, then kicks the
// threads out of KVM_RUN (immediate_exit + a signal), and the threads park or leave here.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>

namespace smolvm {

class RunControl {
 public:
  // On a vCPU thread: blocks while a pause is requested; true when the thread must leave.
  bool Checkpoint();
  // The same, for a vCPU whose last exit (port I/O, MMIO) KVM completes only on the next
  // KVM_RUN: with `operation_pending` it does not park but returns kCompleteFirst, so that the
  // vCPU finishes the instruction (KVM_RUN with immediate_exit) before its state is read.
  enum class Step { kRun, kStop, kCompleteFirst };
  Step Checkpoint(bool operation_pending);
  // A vCPU thread entered or left its run loop for good.
  void ThreadStarted();
  void ThreadFinished();

  void RequestStop();
  bool StopRequested();
  void RequestPause();
  // Blocks until every running vCPU thread is parked in Checkpoint() (or has finished).
  void WaitUntilPaused();
  void Resume();

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false;
  bool pause_ = false;
  size_t running_ = 0;
  size_t parked_ = 0;
};

}  // namespace smolvm
