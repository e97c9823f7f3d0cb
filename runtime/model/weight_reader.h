// Where a model's blocks read their weights from, and into: the checkpoint,
// and the backend whose memory holds them in the dtype its op set takes for
// each use (Backend::LoadWeight). ReadWeight (architectures.h) reads one.
#ifndef MOESERVE_RUNTIME_MODEL_WEIGHT_READER_H_
#define MOESERVE_RUNTIME_MODEL_WEIGHT_READER_H_

#include "kernels/backend.h"
#include "runtime/checkpoint/checkpoint.h"

namespace moeserve {

// Both must outlive the loading (not the loaded weights: those live in the
// backend's memory).
struct WeightReader {
  Checkpoint& checkpoint;
  Backend& backend;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_WEIGHT_READER_H_
