// Aborts on a broken internal invariant of the scheduler: a bug, never bad
// input. Input from users, files or peers is answered with an absl::Status.
#ifndef MOESERVE_SCHEDULER_UTIL_INVARIANT_H_
#define MOESERVE_SCHEDULER_UTIL_INVARIANT_H_

#include <cstdio>
#include <cstdlib>

namespace moeserve::scheduler {

inline void CheckInvariant(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "moeserve scheduler: broken invariant: %s\n", what);
  std::abort();
}

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_UTIL_INVARIANT_H_
