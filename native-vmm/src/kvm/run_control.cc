#include "kvm/run_control.h"

namespace smolvm {

bool RunControl::Checkpoint() { return Checkpoint(false) == Step::kStop; }

RunControl::Step RunControl::Checkpoint(bool operation_pending) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (pause_ && !stop_ && operation_pending) return Step::kCompleteFirst;
  if (pause_ && !stop_) {
    ++parked_;
    changed_.notify_all();
    changed_.wait(lock, [this] { return !pause_ || stop_; });
    --parked_;
  }
  return stop_ ? Step::kStop : Step::kRun;
}

void RunControl::ThreadStarted() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++running_;
}

void RunControl::ThreadFinished() {
  std::lock_guard<std::mutex> lock(mutex_);
  --running_;
  changed_.notify_all();
}

void RunControl::RequestStop() {
  std::lock_guard<std::mutex> lock(mutex_);
  stop_ = true;
  changed_.notify_all();
}

bool RunControl::StopRequested() {
  std::lock_guard<std::mutex> lock(mutex_);
  return stop_;
}

void RunControl::RequestPause() {
  std::lock_guard<std::mutex> lock(mutex_);
  pause_ = true;
}

void RunControl::WaitUntilPaused() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return stop_ || parked_ >= running_; });
}

void RunControl::Resume() {
  std::lock_guard<std::mutex> lock(mutex_);
  pause_ = false;
  changed_.notify_all();
}

}  // namespace smolvm
