// A FIFO queue stored in fixed-size chunks that are recycled: it allocates only while its
// size grows past its previous maximum, never copies elements when it grows (unlike a
// vector, whose doubling of a multi-megabyte buffer costs a copy and, for large blocks, a
// page fault per page), and never allocates per element in steady state (unlike
// std::deque, which frees and allocates a small block every few elements).
#ifndef STREAMMETRICS_OPERATORS_CHUNKED_QUEUE_H_
#define STREAMMETRICS_OPERATORS_CHUNKED_QUEUE_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <vector>

namespace streammetrics {

template <typename T, size_t kChunk = 4096>
class ChunkedQueue {
 public:
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  void push_back(const T& v) {
    if (chunks_.empty() || tail_ == kChunk) {
      if (!free_.empty()) {
        chunks_.push_back(std::move(free_.back()));
        free_.pop_back();
      } else {
        chunks_.push_back(std::make_unique<T[]>(kChunk));
      }
      tail_ = 0;
    }
    chunks_.back()[tail_++] = v;
    ++size_;
  }

  // REQUIRES: !empty()
  const T& front() const { return chunks_.front()[head_]; }

  // The i-th element from the front. REQUIRES: i < size()
  const T& operator[](size_t i) const {
    const size_t at = head_ + i;
    return chunks_[at / kChunk][at % kChunk];
  }

  // REQUIRES: !empty()
  void pop_front() {
    --size_;
    if (++head_ == kChunk || size_ == 0) {
      // The head chunk is used up (or the queue is empty): keep it for reuse.
      free_.push_back(std::move(chunks_.front()));
      chunks_.pop_front();
      head_ = 0;
      // Every chunk holds at least one pushed element, so an empty queue has no chunks.
      if (chunks_.empty()) tail_ = kChunk;
    }
  }

 private:
  std::deque<std::unique_ptr<T[]>> chunks_;  // one pointer per kChunk elements
  std::vector<std::unique_ptr<T[]>> free_;
  size_t head_ = 0;  // next element to pop in chunks_.front()
  size_t tail_ = 0;  // next free slot in chunks_.back()
  size_t size_ = 0;
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_CHUNKED_QUEUE_H_
