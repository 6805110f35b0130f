// The first GPU selection (lab, replaced in src by src/cuda/kernels/selection-fast.ts; kept as the
// baseline the dev benches compare with). CUDA source of SparseK's causal selection (SPEC.md section 3), mirroring src/cpu/kernels/selection.ts
// on one score row u (T) per (b, KV head): for every query i, with Cand_i = { j <= i - W } and
// k_i = min(K, |Cand_i|),
//   Sel_i   the k_i candidates with the largest (u_j, j) (the more recent wins a tie), ascending,
//   tau_i   the smallest t with sum_{j in Cand_i} clip(u_j - t, 0, 1) <= k_i (docs/decisions.md),
//           -Infinity when k_i = |Cand_i|,
//   |F_i|   the number of candidates with 0 < u_j - tau_i < 1 (the score gradient's free set),
//   key_i   the packed (u, j) key of Sel_i's weakest member (0 when every candidate is selected).
// Not here: gates and attention (attention.ts), which read these.
//
// The CPU walks the queries in order with heaps; here the queries are cut into tiles of BQ = 256
// consecutive queries, one block per (tile, row), all tiles in parallel. What makes a tile cheap:
// with i_F the tile's first query whose selection is full (|Cand| > K) and theta_F its weakest
// selected score, every query i >= i_F of the tile only needs the set
//   S = { j <= c_last : u_j > theta_F - 1 }  ∪  { the (K+1)-th best of Cand_{i_F} }  ∪  { the tile's new candidates }
// because theta_i >= theta_F (SPEC's monotonicity), so S holds each query's top K+1 candidates and
// every candidate that can lie in the free set or cross it. A block finds theta_F by a radix select
// over Cand_{i_F} (O(i) per tile, not per query), gathers S in position order, sorts a copy by
// key, and then each thread solves its own query by one walk down the sorted S: the K-th and
// (K+1)-th eligible keys give theta_i and the next best score; if the next best is <= theta_i - 1,
// tau_i is that score exactly (f is flat at k_i down to it); otherwise tau_i lies in (theta_i - 1,
// theta_i), where f strictly decreases, and the walk meets the crossing f(t) = K by visiting the
// breakpoints (u_j entering the free set, u_j - 1 leaving it) in order: tau = (sum_F u + |U| - K) / |F|
// on the segment found, in double. Work per row: O(T^2 / BQ) for the radix selects and gathers plus
// O(T |S|) for the walks; |S| is about K + BQ + (number of scores within 1 of theta), which
// for spread-out scores is a small multiple of K.
//
// |S| is bounded by the shared-memory capacity CAP (selectSharedSource). A tile whose S is larger
// (scores bunched within 1 of each other: e.g. all equal, as with zero-initialised scoring weights and
// no position slope) is flagged, and sparsek_select_global redoes it with S in global scratch of
// nextpow2(T) entries per block: same code, correct, slower (a global-memory sort per tile).
//
// Keys: (ord(u) << 32) | j, ord the order-preserving map of float bits to uint32 (with -0 taken as
// +0, as the CPU's comparison does), so key order is the CPU's (u_j, j) order and keys are unique.
// Sums and thresholds are double, from the float scores, like the CPU's float64.

import type { KernelSource } from '../../src/cuda/runtime.js';
import { ORD_OF } from '../../src/cuda/kernels/selection.js';

/** Queries per tile = threads per block of the selection kernels. */
export const SELECT_BQ = 256;

/** Shared pieces: key packing, block scan, radix select, the walk, and one tile's whole selection. */
function selectCommon(): string {
  return `
typedef unsigned long long u64;
#define BQ ${SELECT_BQ}
#define WARPS (BQ / 32)
#define FULL 0xffffffffu
#define DINF __longlong_as_double(0x7ff0000000000000LL)

struct SelectScratch {
  int hist[256];       // radix-select digit counts
  int warp_tot[WARPS]; // block scan
  int bcast[2];        // radix-select digit and remaining rank
  u64 red[WARPS];      // block min
  u64 qthk[BQ];        // each query's weakest selected key
};

${ORD_OF}__device__ __forceinline__ double val_of(u64 key) {
  unsigned o = (unsigned)(key >> 32);
  return (double)__uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
__device__ __forceinline__ u64 key_of(float x, int j) { return ((u64)ord_of(x) << 32) | (unsigned)j; }
__device__ __forceinline__ int pos_of(u64 key) { return (int)(unsigned)(key & 0xffffffffull); }

// Exclusive prefix sum of x over the block (BQ threads, all of which must call it); *total = the sum.
__device__ int block_scan(int x, int* total, SelectScratch& sc) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int incl = x;
  for (int o = 1; o < 32; o <<= 1) {
    int y = __shfl_up_sync(FULL, incl, o);
    if (lane >= o) incl += y;
  }
  __syncthreads(); // the previous call's readers are done with warp_tot
  if (lane == 31) sc.warp_tot[w] = incl;
  __syncthreads();
  int before = 0, tot = 0;
  for (int k = 0; k < WARPS; k++) {
    int t = sc.warp_tot[k];
    if (k < w) before += t;
    tot += t;
  }
  *total = tot;
  return before + incl - x;
}

// The r-th largest key (1-based) among positions [0, n) of u: most significant digit first, 8 bits
// a pass, counting only keys that match the digits found so far. Position digits above jbits are
// zero for every key and skipped. Counts are warp-aggregated (equal digits are common: the top
// byte of a float is its sign and exponent).
__device__ u64 radix_select(const float* u, int n, int r, int jbits, SelectScratch& sc) {
  u64 pref = 0, pmask = 0;
  for (int s = 56; s >= 0; s -= 8) {
    if (s < 32 && s >= jbits) continue;
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += BQ) sc.hist[b] = 0;
    __syncthreads();
    for (int base = 0; base < n; base += BQ) {
      const int j = base + threadIdx.x;
      int d = -1;
      if (j < n) {
        const u64 key = key_of(u[j], j);
        if ((key & pmask) == pref) d = (int)((key >> s) & 255);
      }
      const unsigned peers = __match_any_sync(FULL, d);
      if (d >= 0 && (int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&sc.hist[d], __popc(peers));
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // lane l holds digits 255 - 8l down to 248 - 8l; find the digit where the count from the top reaches r
      const int lane = threadIdx.x;
      int c = 0;
      for (int t = 0; t < 8; t++) c += sc.hist[255 - 8 * lane - t];
      int incl = c;
      for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(FULL, incl, o);
        if (lane >= o) incl += y;
      }
      const unsigned hit = __ballot_sync(FULL, incl >= r);
      if (lane == __ffs(hit) - 1) {
        int before = incl - c;
        for (int t = 0; t < 8; t++) {
          const int b = 255 - 8 * lane - t;
          if (before + sc.hist[b] >= r) {
            sc.bcast[0] = b;
            sc.bcast[1] = r - before;
            break;
          }
          before += sc.hist[b];
        }
      }
    }
    __syncthreads();
    pref |= (u64)sc.bcast[0] << s;
    pmask |= 0xffull << s;
    r = sc.bcast[1];
  }
  return pref;
}

// The smallest key above floor among positions [0, n).
__device__ u64 block_min_above(const float* u, int n, u64 floor, SelectScratch& sc) {
  u64 m = ~0ull;
  for (int j = threadIdx.x; j < n; j += BQ) {
    const u64 key = key_of(u[j], j);
    if (key > floor && key < m) m = key;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const u64 y = __shfl_xor_sync(FULL, m, o);
    m = y < m ? y : m;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sc.red[threadIdx.x >> 5] = m;
  __syncthreads();
  u64 r = ~0ull;
  for (int k = 0; k < WARPS; k++) r = sc.red[k] < r ? sc.red[k] : r;
  return r;
}

// tau for a query whose threshold lies in (theta - 1, theta): Sv holds its candidates (those at
// positions <= ci) sorted by key, descending. f(t) = |U| + sum_F u - |F| t on each segment; start
// at t = theta (f < K there) and move down through the breakpoints until f reaches K.
__device__ double tau_walk(const u64* Sv, int size, int ci, int K, double theta) {
  const double lo = theta - 1.0;
  int m = 0, U = 0, nF = 0;
  double sumF = 0.0;
  for (; m < size; m++) { // U: u >= theta + 1
    const u64 key = Sv[m];
    if (val_of(key) < theta + 1.0) break;
    if (pos_of(key) <= ci) U++;
  }
  int pL = m; // F at theta: theta < u < theta + 1; each leaves F (into U) at t = u - 1
  for (; m < size; m++) {
    const u64 key = Sv[m];
    const double v = val_of(key);
    if (v <= theta) break;
    if (pos_of(key) <= ci) { nF++; sumF += v; }
  }
  const int endL = m;
  int pE = m; // u <= theta: each enters F at t = u (those at or below theta - 1 never do)
  double top = theta;
  for (;;) {
    double vE = -DINF, vL = -DINF;
    while (pE < size) {
      const u64 key = Sv[pE];
      const double v = val_of(key);
      if (v <= lo) { pE = size; break; }
      if (pos_of(key) <= ci) { vE = v; break; }
      pE++;
    }
    while (pL < endL) {
      const u64 key = Sv[pL];
      if (pos_of(key) <= ci) { vL = val_of(key); break; }
      pL++;
    }
    const double te = fmax(fmax(vE, vL - 1.0), lo);
    const double fte = (double)U + sumF - (double)nF * te;
    if (fte >= (double)K || (vE == -DINF && vL == -DINF)) {
      const double t = nF > 0 ? ((double)U + sumF - (double)K) / (double)nF : te;
      return fmin(fmax(t, te), top);
    }
    if (vE >= vL - 1.0) { nF++; sumF += vE; pE++; }
    else { nF--; sumF -= vL; U++; pL++; }
    top = te;
  }
}

// One tile's selection (see the file header). Sj and Sv hold cap entries each (cap a power of two),
// in shared or global memory. Returns false, having written only the tile's non-full queries, when
// S does not fit. Every thread of the block must call it; its early returns are block-uniform.
__device__ bool select_tile(
    double* tau,         // (T)
    u64* thk,            // (T)
    int* count,          // (T)
    int* nfree,          // (T)
    int* sel,            // (T, K)
    const float* u,      // (T)
    int T, int K, int W, int jbits, int tile, u64* Sj, u64* Sv, int cap, SelectScratch& sc) {
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int i0 = tile * BQ, i1 = min(T, i0 + BQ), nq = i1 - i0;
  const int i = i0 + tid, ci = i - W; // |Cand_i| = ci + 1 when ci >= 0
  const bool has = tid < nq;
  const bool full = has && ci + 1 > K;
  // 1. queries with k_i = |Cand_i| select every candidate
  if (has && !full) { tau[i] = -DINF; thk[i] = 0ull; count[i] = max(0, ci + 1); nfree[i] = 0; }
  for (int q = w; q < nq; q += WARPS) {
    const int n = i0 + q - W + 1;
    if (n > K) break;
    for (int c = lane; c < n; c += 32) sel[(size_t)(i0 + q) * K + c] = c;
  }
  const int iF = max(i0, K + W); // the first full query
  if (iF >= i1) return true;
  const int c0 = iF - W, cl = i1 - 1 - W;
  // 2. the (K+1)-th best candidate of i_F, and the K-th (theta_F's key)
  const u64 next0 = radix_select(u, c0 + 1, K + 1, jbits, sc);
  const u64 thk0 = K > 0 ? block_min_above(u, c0 + 1, next0, sc) : ~0ull;
  const double lim = K > 0 ? val_of(thk0) - 1.0 : DINF;
  // 3. gather S in position order
  int size = 0;
  for (int base = 0; base <= cl; base += BQ) {
    const int j = base + tid;
    u64 key = 0;
    int f = 0;
    if (j <= cl) {
      const float uj = u[j];
      key = key_of(uj, j);
      f = (double)uj > lim || j > c0 || key == next0;
    }
    int tot;
    const int at = block_scan(f, &tot, sc);
    if (size + tot > cap) return false;
    if (f) Sj[size + at] = key;
    size += tot;
  }
  // 4. Sv = S sorted by key, descending (bitonic, zero keys pad to a power of two)
  int P = 1;
  while (P < size) P <<= 1;
  __syncthreads();
  for (int x = tid; x < P; x += BQ) Sv[x] = x < size ? Sj[x] : 0ull;
  __syncthreads();
  for (int k2 = 2; k2 <= P; k2 <<= 1) {
    for (int jj = k2 >> 1; jj > 0; jj >>= 1) {
      for (int x = tid; x < P; x += BQ) {
        const int y = x ^ jj;
        if (y > x) {
          const u64 a = Sv[x], b = Sv[y];
          if ((x & k2) == 0 ? a < b : a > b) { Sv[x] = b; Sv[y] = a; }
        }
      }
      __syncthreads();
    }
  }
  // 5. each full query: its weakest selected key, tau and |F|
  if (full) {
    int cnt = 0;
    u64 tk = ~0ull, nk = 0ull;
    for (int m = 0; m < size; m++) {
      const u64 key = Sv[m];
      if (pos_of(key) <= ci) {
        if (++cnt == K) tk = key;
        if (cnt == K + 1) { nk = key; break; }
      }
    }
    const double next = val_of(nk);
    double t;
    if (K == 0) t = next;
    else {
      const double theta = val_of(tk);
      t = next <= theta - 1.0 ? next : tau_walk(Sv, size, ci, K, theta);
    }
    int nf = 0;
    for (int m = 0; m < size; m++) {
      const u64 key = Sv[m];
      const double v = val_of(key);
      if (!(v > t)) break;
      if (pos_of(key) <= ci && v - t < 1.0) nf++;
    }
    tau[i] = t;
    thk[i] = tk;
    count[i] = K;
    nfree[i] = nf;
    sc.qthk[tid] = tk;
  }
  __syncthreads();
  // 6. rows of the full queries, a warp each: members of S at or below c_i with key >= key_i
  if (K > 0) {
    for (int q = iF - i0 + w; q < nq; q += WARPS) {
      const int iq = i0 + q, cq = iq - W;
      const u64 tk = sc.qthk[q];
      int written = 0;
      for (int base = 0; base < size && written < K; base += 32) {
        const int x = base + lane;
        bool f = false;
        u64 key = 0;
        if (x < size) {
          key = Sj[x];
          f = pos_of(key) <= cq && key >= tk;
        }
        const unsigned b = __ballot_sync(FULL, f);
        if (f) sel[(size_t)iq * K + written + __popc(b & ((1u << lane) - 1u))] = pos_of(key);
        written += __popc(b);
      }
    }
  }
  return true;
}
`;
}

/**
 * Pass 1 of the selection: every tile with S in shared memory (CAP entries; 16 CAP bytes of dynamic
 * shared memory). flags[row, tile] = 1 marks a tile left to pass 2.
 * Launch: grid (ceil(T / BQ), B*NKV), block BQ, dynamic shared 16 * CAP bytes.
 * Traffic per tile: u[0 .. i_F - W] read ~7 times (radix passes, min, gather; L2-resident), outputs written once.
 */
export function selectSharedSource(opts: { CAP: number }): KernelSource {
  const name = `sparsek_select_shared_c${opts.CAP}`;
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32'],
    source: `${selectCommon()}
#define CAP ${opts.CAP}
extern "C" __global__ void __launch_bounds__(BQ) ${name}(
    double* tau,         // (B*NKV, T)
    u64* thk,            // (B*NKV, T)
    int* count,          // (B*NKV, T)
    int* nfree,          // (B*NKV, T)
    int* sel,            // (B*NKV, T, K)
    int* flags,          // (B*NKV, ceil(T / BQ))
    const float* u,      // (B*NKV, T)
    int T, int K, int W, int jbits) {
  extern __shared__ u64 dyn[];
  __shared__ SelectScratch sc;
  const size_t r0 = (size_t)blockIdx.y * T;
  const bool ok = select_tile(tau + r0, thk + r0, count + r0, nfree + r0, sel + r0 * K, u + r0,
                              T, K, W, jbits, blockIdx.x, dyn, dyn + CAP, CAP, sc);
  if (threadIdx.x == 0) flags[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = ok ? 0 : 1;
}
`,
  };
}

/**
 * Pass 2: the flagged tiles, each by one of gridDim.x persistent blocks with S in global scratch
 * (gridDim.x, 2, cap) u64, cap = nextpow2(T) so that every S fits. Does nothing when no tile is flagged.
 * Launch: grid G (any), block BQ.
 */
export function selectGlobalSource(): KernelSource {
  return {
    name: 'sparsek_select_global',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'],
    source: `${selectCommon()}
extern "C" __global__ void __launch_bounds__(BQ) sparsek_select_global(
    double* tau,         // (B*NKV, T)
    u64* thk,            // (B*NKV, T)
    int* count,          // (B*NKV, T)
    int* nfree,          // (B*NKV, T)
    int* sel,            // (B*NKV, T, K)
    const int* flags,    // (B*NKV, ntiles)
    u64* scratch,        // (gridDim.x, 2, cap)
    const float* u,      // (B*NKV, T)
    int T, int K, int W, int jbits, int ntiles, int BH, int cap) {
  __shared__ SelectScratch sc;
  u64* Sj = scratch + (size_t)blockIdx.x * 2 * cap;
  u64* Sv = Sj + cap;
  for (int t = blockIdx.x; t < ntiles * BH; t += gridDim.x) {
    if (flags[t] == 0) continue;
    const size_t r0 = (size_t)(t / ntiles) * T;
    __syncthreads();
    select_tile(tau + r0, thk + r0, count + r0, nfree + r0, sel + r0 * K, u + r0, T, K, W, jbits, t % ntiles, Sj, Sv, cap, sc);
  }
}
`,
  };
}

