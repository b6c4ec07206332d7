// Tile rasterizer for 2D Gaussians on the CPU: binning, front-to-back compositing and its
// hand-written backward (the walk of gsplat's rasterize_to_pixels, one tile per OpenMP task).
//
// A plain C ABI over raw pointers, loaded with ctypes by flow3d/splat/backend_cpu.py: no torch
// headers, so it builds in seconds with g++ alone. Every array is contiguous, row-major:
//   means2d [C,N,2], conics [C,N,3], colors [C,N,3], opacities [C,N], depths [C,N],
//   radii [C,N,2] int32, images [C,H,W,k]; tiles are numbered ty * tiles_x + tx per camera.
// The maths (see flow3d/splat/render.py): power = 0.5 (a dx^2 + c dy^2) + b dx dy,
// alpha = min(alpha_max, o exp(-power)), skip power < 0 or alpha < alpha_min, stop before the
// fragment whose transmittance would fall to <= t_min.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

struct Params {
  int64_t C, N, W, H, ts, tiles_x, tiles_y;
  double alpha_min, alpha_max, t_min;
  int threads;
};

inline int64_t clamp64(double v, int64_t lo, int64_t hi) {
  if (!(v > static_cast<double>(lo))) return lo;  // also NaN
  if (v > static_cast<double>(hi)) return hi;
  return static_cast<int64_t>(v);
}

// The pixel rectangle where alpha can reach alpha_min: o exp(-power) >= alpha_min means
// d^T Q d <= 2 log(o / alpha_min) with Q the conic, whose extent along x is
// sqrt(2 L (Q^-1)_xx). One pixel of margin; the per-pixel test decides exactly, so the output
// does not depend on the tile size (the 3-sigma radii only decide which Gaussians are kept,
// as in the dense reference).
template <typename S>
void rects_impl(const Params& p, const S* means2d, const S* conics, const S* opac,
                const int32_t* radii, int32_t* rects, int64_t* counts) {
  const int64_t T = p.tiles_x * p.tiles_y;
#pragma omp parallel for schedule(static) num_threads(p.threads)
  for (int64_t i = 0; i < p.C * p.N; ++i) {
    int32_t* r = rects + 4 * i;
    r[0] = 0; r[1] = -1; r[2] = 0; r[3] = -1;  // empty: x0 > x1
    const double o = opac[i];
    if (radii[2 * i] <= 0 || radii[2 * i + 1] <= 0 || !(o >= p.alpha_min)) continue;
    const double a = conics[3 * i], b = conics[3 * i + 1], c = conics[3 * i + 2];
    const double det = a * c - b * b;
    if (!(det > 0)) continue;
    const double L = std::log(o / p.alpha_min);
    const double ex = std::sqrt(2.0 * L * c / det) + 1.0;
    const double ey = std::sqrt(2.0 * L * a / det) + 1.0;
    const double mx = means2d[2 * i], my = means2d[2 * i + 1];
    if (!std::isfinite(mx) || !std::isfinite(my) || !std::isfinite(ex) || !std::isfinite(ey))
      continue;
    const double x0 = std::floor(mx - ex - 0.5), x1 = std::ceil(mx + ex - 0.5);
    const double y0 = std::floor(my - ey - 0.5), y1 = std::ceil(my + ey - 0.5);
    if (x1 < 0 || y1 < 0 || x0 > p.W - 1 || y0 > p.H - 1) continue;
    r[0] = static_cast<int32_t>(clamp64(x0, 0, p.W - 1) / p.ts);
    r[1] = static_cast<int32_t>(clamp64(x1, 0, p.W - 1) / p.ts);
    r[2] = static_cast<int32_t>(clamp64(y0, 0, p.H - 1) / p.ts);
    r[3] = static_cast<int32_t>(clamp64(y1, 0, p.H - 1) / p.ts);
  }
  for (int64_t i = 0; i < p.C * p.N; ++i) {
    const int32_t* r = rects + 4 * i;
    int64_t* cnt = counts + (i / p.N) * T;
    for (int32_t ty = r[2]; ty <= r[3]; ++ty)
      for (int32_t tx = r[0]; tx <= r[1]; ++tx) ++cnt[ty * p.tiles_x + tx];
  }
}

// Visit the Gaussians of each camera in depth order (order [C,N], a stable argsort), so every
// tile's list comes out sorted by (depth, index) without a sort per tile.
void fill_impl(const Params& p, const int32_t* rects, const int64_t* order,
               const int64_t* offsets, int32_t* ids) {
  const int64_t T = p.tiles_x * p.tiles_y;
#pragma omp parallel for schedule(static) num_threads(p.threads)
  for (int64_t c = 0; c < p.C; ++c) {
    std::vector<int64_t> cursor(offsets + c * T, offsets + (c + 1) * T);
    for (int64_t k = 0; k < p.N; ++k) {
      const int64_t g = order[c * p.N + k];
      const int32_t* r = rects + 4 * (c * p.N + g);
      for (int32_t ty = r[2]; ty <= r[3]; ++ty)
        for (int32_t tx = r[0]; tx <= r[1]; ++tx)
          ids[cursor[ty * p.tiles_x + tx]++] = static_cast<int32_t>(g);
    }
  }
}

// A tile's fragments gathered into one contiguous record each (cache-friendly inner loop).
template <typename S>
struct Frag {
  S mx, my, a, b, c, o, r, g, bl, z;
};

template <typename S>
void gather(const Params& p, int64_t cam, const int32_t* ids, int64_t start, int64_t end,
            const S* means2d, const S* conics, const S* colors, const S* opac, const S* depths,
            std::vector<Frag<S>>& out) {
  out.resize(end - start);
  for (int64_t k = start; k < end; ++k) {
    const int64_t i = cam * p.N + ids[k];
    out[k - start] = {means2d[2 * i], means2d[2 * i + 1], conics[3 * i], conics[3 * i + 1],
                      conics[3 * i + 2], opac[i], colors[3 * i], colors[3 * i + 1],
                      colors[3 * i + 2], depths[i]};
  }
}

// The same expression, in the same order, as rasterize_dense, so both agree to the last bit
// on which fragments pass the alpha_min test.
template <typename S>
inline S power_of(const Frag<S>& f, S dx, S dy) {
  return S(0.5) * (f.a * (dx * dx) + f.c * (dy * dy)) + (f.b * dx) * dy;
}

template <typename S>
void forward_impl(const Params& p, const int64_t* offsets, const int32_t* ids,
                  const S* means2d, const S* conics, const S* colors, const S* opac,
                  const S* depths, const S* bg, S* rgb, S* alpha, S* depth, S* t_final,
                  int32_t* n_last) {
  const int64_t T = p.tiles_x * p.tiles_y;
  const S amin = S(p.alpha_min), amax = S(p.alpha_max), tmin = S(p.t_min);
#pragma omp parallel num_threads(p.threads)
  {
    std::vector<Frag<S>> fr;
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < p.C * T; ++job) {
      const int64_t cam = job / T, tile = job % T;
      const int64_t tx = tile % p.tiles_x, ty = tile / p.tiles_x;
      gather(p, cam, ids, offsets[job], offsets[job + 1], means2d, conics, colors, opac, depths,
             fr);
      const int64_t M = static_cast<int64_t>(fr.size());
      const int64_t y_end = std::min(p.H, (ty + 1) * p.ts), x_end = std::min(p.W, (tx + 1) * p.ts);
      for (int64_t py = ty * p.ts; py < y_end; ++py) {
        for (int64_t px = tx * p.ts; px < x_end; ++px) {
          const S fx = S(px) + S(0.5), fy = S(py) + S(0.5);
          S tr = 1, cr = 0, cg = 0, cb = 0, cz = 0;
          int32_t last = 0;
          for (int64_t k = 0; k < M; ++k) {
            const Frag<S>& f = fr[k];
            const S dx = fx - f.mx, dy = fy - f.my;
            const S pw = power_of(f, dx, dy);
            if (pw < 0) continue;
            const S al = std::min(amax, f.o * std::exp(-pw));
            if (al < amin) continue;
            const S tn = tr * (S(1) - al);
            if (tn <= tmin) break;
            const S w = al * tr;
            cr += w * f.r; cg += w * f.g; cb += w * f.bl; cz += w * f.z;
            tr = tn;
            last = static_cast<int32_t>(k + 1);
          }
          const int64_t pix = (cam * p.H + py) * p.W + px;
          const S acc = S(1) - tr;
          rgb[3 * pix] = cr + tr * bg[0];
          rgb[3 * pix + 1] = cg + tr * bg[1];
          rgb[3 * pix + 2] = cb + tr * bg[2];
          alpha[pix] = acc;
          depth[pix] = acc > 0 ? cz / acc : S(0);
          t_final[pix] = tr;
          n_last[pix] = last;
        }
      }
    }
  }
}

// Back to front over each pixel's contributing fragments (gsplat's approach): T_i is recovered
// from the stored final transmittance by T_i = T_{i+1} / (1 - alpha_i), and the colour and
// depth "behind" fragment i are running sums. Gradients go to a per-fragment buffer owned by
// the tile's task (no atomics), then are summed per Gaussian.
template <typename S>
void backward_impl(const Params& p, const int64_t* offsets, const int32_t* ids,
                   const S* means2d, const S* conics, const S* colors, const S* opac,
                   const S* depths, const S* bg, const S* alpha, const S* depth,
                   const S* t_final, const int32_t* n_last, const S* g_rgb, const S* g_alpha,
                   const S* g_depth, S* frag_grad /* [F,10] */, S* g_means2d, S* g_conics,
                   S* g_colors, S* g_opac, S* g_depths) {
  const int64_t T = p.tiles_x * p.tiles_y;
  const S amin = S(p.alpha_min), amax = S(p.alpha_max);
#pragma omp parallel num_threads(p.threads)
  {
    std::vector<Frag<S>> fr;
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < p.C * T; ++job) {
      const int64_t cam = job / T, tile = job % T;
      const int64_t tx = tile % p.tiles_x, ty = tile / p.tiles_x;
      const int64_t start = offsets[job];
      gather(p, cam, ids, start, offsets[job + 1], means2d, conics, colors, opac, depths, fr);
      S* gf = frag_grad + 10 * start;
      std::fill(gf, gf + 10 * fr.size(), S(0));
      const int64_t y_end = std::min(p.H, (ty + 1) * p.ts), x_end = std::min(p.W, (tx + 1) * p.ts);
      for (int64_t py = ty * p.ts; py < y_end; ++py) {
        for (int64_t px = tx * p.ts; px < x_end; ++px) {
          const int64_t pix = (cam * p.H + py) * p.W + px;
          const int32_t last = n_last[pix];
          if (last == 0) continue;
          const S fx = S(px) + S(0.5), fy = S(py) + S(0.5);
          const S tf = t_final[pix], acc = alpha[pix];
          const S gr = g_rgb[3 * pix], gg = g_rgb[3 * pix + 1], gb = g_rgb[3 * pix + 2];
          // depth = D / A: dL/dD = g / A, and A's own gradient gains -g D / A^2 = -g depth / A
          const S dl_dd = acc > 0 ? g_depth[pix] / acc : S(0);
          const S dl_da = g_alpha[pix] - (acc > 0 ? g_depth[pix] * depth[pix] / acc : S(0));
          const S dl_dtf = -dl_da + gr * bg[0] + gg * bg[1] + gb * bg[2];
          S tr = tf, sr = 0, sg = 0, sb = 0, sz = 0;  // sums over the fragments behind
          for (int64_t k = last - 1; k >= 0; --k) {
            const Frag<S>& f = fr[k];
            const S dx = fx - f.mx, dy = fy - f.my;
            const S pw = power_of(f, dx, dy);
            if (pw < 0) continue;
            const S vis = std::exp(-pw);
            const S raw = f.o * vis;
            const S al = std::min(amax, raw);
            if (al < amin) continue;
            const S om = S(1) - al;
            const S ti = tr / om;
            const S w = al * ti;
            S* g = gf + 10 * k;
            g[5] += gr * w; g[6] += gg * w; g[7] += gb * w;
            g[9] += dl_dd * w;
            const S dl_dal = gr * (ti * f.r - sr / om) + gg * (ti * f.g - sg / om) +
                             gb * (ti * f.bl - sb / om) + dl_dd * (ti * f.z - sz / om) -
                             dl_dtf * tf / om;
            if (raw <= amax) {
              g[8] += dl_dal * vis;
              const S dl_dpw = -dl_dal * al;
              g[2] += dl_dpw * S(0.5) * dx * dx;
              g[3] += dl_dpw * dx * dy;
              g[4] += dl_dpw * S(0.5) * dy * dy;
              g[0] -= dl_dpw * (f.a * dx + f.b * dy);
              g[1] -= dl_dpw * (f.c * dy + f.b * dx);
            }
            sr += w * f.r; sg += w * f.g; sb += w * f.bl; sz += w * f.z;
            tr = ti;
          }
        }
      }
    }
  }
  // Sum fragments into Gaussians; cameras own disjoint output rows.
#pragma omp parallel for schedule(static) num_threads(p.threads)
  for (int64_t cam = 0; cam < p.C; ++cam) {
    for (int64_t k = offsets[cam * T]; k < offsets[(cam + 1) * T]; ++k) {
      const int64_t i = cam * p.N + ids[k];
      const S* g = frag_grad + 10 * k;
      g_means2d[2 * i] += g[0]; g_means2d[2 * i + 1] += g[1];
      g_conics[3 * i] += g[2]; g_conics[3 * i + 1] += g[3]; g_conics[3 * i + 2] += g[4];
      g_colors[3 * i] += g[5]; g_colors[3 * i + 1] += g[6]; g_colors[3 * i + 2] += g[7];
      g_opac[i] += g[8];
      g_depths[i] += g[9];
    }
  }
}

Params make_params(int64_t C, int64_t N, int64_t W, int64_t H, int64_t ts, double alpha_min,
                   double alpha_max, double t_min, int threads) {
  Params p{C, N, W, H, ts, (W + ts - 1) / ts, (H + ts - 1) / ts, alpha_min, alpha_max, t_min,
           threads < 1 ? 1 : threads};
  return p;
}

}  // namespace

#define FLOW3D_ARGS_P int64_t C, int64_t N, int64_t W, int64_t H, int64_t ts, double alpha_min, \
                      double alpha_max, double t_min, int threads
#define FLOW3D_P make_params(C, N, W, H, ts, alpha_min, alpha_max, t_min, threads)

extern "C" {

int flow3d_raster_abi_version() { return 1; }

void flow3d_bin_fill(FLOW3D_ARGS_P, const int32_t* rects, const int64_t* order,
                     const int64_t* offsets, int32_t* ids) {
  fill_impl(FLOW3D_P, rects, order, offsets, ids);
}

#define FLOW3D_DEFINE(S, SUFFIX)                                                              \
  void flow3d_bin_rects_##SUFFIX(FLOW3D_ARGS_P, const S* means2d, const S* conics,            \
                                 const S* opac, const int32_t* radii, int32_t* rects,         \
                                 int64_t* counts) {                                           \
    rects_impl<S>(FLOW3D_P, means2d, conics, opac, radii, rects, counts);                     \
  }                                                                                           \
  void flow3d_forward_##SUFFIX(FLOW3D_ARGS_P, const int64_t* offsets, const int32_t* ids,     \
                               const S* means2d, const S* conics, const S* colors,            \
                               const S* opac, const S* depths, const S* bg, S* rgb, S* alpha, \
                               S* depth, S* t_final, int32_t* n_last) {                       \
    forward_impl<S>(FLOW3D_P, offsets, ids, means2d, conics, colors, opac, depths, bg, rgb,   \
                    alpha, depth, t_final, n_last);                                           \
  }                                                                                           \
  void flow3d_backward_##SUFFIX(FLOW3D_ARGS_P, const int64_t* offsets, const int32_t* ids,    \
                                const S* means2d, const S* conics, const S* colors,           \
                                const S* opac, const S* depths, const S* bg, const S* alpha,  \
                                const S* depth, const S* t_final, const int32_t* n_last,      \
                                const S* g_rgb, const S* g_alpha, const S* g_depth,           \
                                S* frag_grad, S* g_means2d, S* g_conics, S* g_colors,         \
                                S* g_opac, S* g_depths) {                                     \
    backward_impl<S>(FLOW3D_P, offsets, ids, means2d, conics, colors, opac, depths, bg,       \
                     alpha, depth, t_final, n_last, g_rgb, g_alpha, g_depth, frag_grad,       \
                     g_means2d, g_conics, g_colors, g_opac, g_depths);                        \
  }

FLOW3D_DEFINE(float, f32)
FLOW3D_DEFINE(double, f64)

}  // extern "C"
