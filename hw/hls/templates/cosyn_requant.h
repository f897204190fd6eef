// cosyn: exact integer requantization layers for hls4ml (io_parallel and io_stream).
//
// Each layer computes, element by element, exactly what the golden model of the
// cosyn integer graph computes (cosyn/ir/nodes.py). Per-channel parameters are
// arrays of CONFIG_T::n_chan entries; the channel of flat element f is f % n_chan
// (channels last, as hls4ml lays out tensors).
#ifndef COSYN_REQUANT_H_
#define COSYN_REQUANT_H_

#include "ap_int.h"
#include "hls_stream.h"
#include "nnet_common.h"

namespace nnet {

struct cosyn_shift_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;
    static const bool half_even = true;
    typedef ap_int<64> work_t;
};

struct cosyn_threshold_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;
    static const unsigned n_thr = 1;
    typedef ap_int<64> work_t;
};

struct cosyn_add_config {
    static const unsigned n_in = 1;
    static const unsigned shift1 = 0;
    static const unsigned shift2 = 0;
    typedef ap_int<64> work_t;
};

// clip(round(x * 2**-shift), lo, hi): left shift for shift < 0; round half to even or floor.
template <class x_T, typename CONFIG_T, class s_T, class c_T>
typename CONFIG_T::work_t cosyn_shift_one(x_T x, s_T shift, c_T lo, c_T hi) {
    #pragma HLS INLINE
    typedef typename CONFIG_T::work_t work_t;
    const int k = shift;
    work_t y = x;
    if (k < 0) {
        y = y << (-k);
    }
    work_t q = y;
    if (k > 0) {
        if (CONFIG_T::half_even) {
            work_t half = work_t(1) << (k - 1);
            work_t odd = (y >> k) & 1;
            q = (y + half - 1 + odd) >> k;
        } else {
            q = y >> k;
        }
    }
    if (q < lo) q = lo;
    if (q > hi) q = hi;
    return q;
}

// base + sign * #{j : x >= thresholds[j]}
template <class x_T, typename CONFIG_T, class t_T, class b_T, class g_T>
typename CONFIG_T::work_t cosyn_threshold_one(x_T x, t_T *thr, b_T base, g_T sign) {
    #pragma HLS INLINE
    ap_uint<32> count = 0;
    for (unsigned j = 0; j < CONFIG_T::n_thr; j++) {
        #pragma HLS UNROLL
        if (x >= thr[j]) count++;
    }
    typename CONFIG_T::work_t r = base;
    if (sign < 0) return r - count;
    return r + count;
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_shift(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                 typename CONFIG_T::shift_t shift[CONFIG_T::n_chan],
                 typename CONFIG_T::clip_t lo[CONFIG_T::n_chan],
                 typename CONFIG_T::clip_t hi[CONFIG_T::n_chan]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=shift complete
    #pragma HLS ARRAY_PARTITION variable=lo complete
    #pragma HLS ARRAY_PARTITION variable=hi complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        unsigned c = i % CONFIG_T::n_chan;
        res[i] = cosyn_shift_one<data_T, CONFIG_T>(data[i], shift[c], lo[c], hi[c]);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_shift(hls::stream<data_T> &data, hls::stream<res_T> &res,
                 typename CONFIG_T::shift_t shift[CONFIG_T::n_chan],
                 typename CONFIG_T::clip_t lo[CONFIG_T::n_chan],
                 typename CONFIG_T::clip_t hi[CONFIG_T::n_chan]) {
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            unsigned c = (i * res_T::size + j) % CONFIG_T::n_chan;
            out_data[j] = cosyn_shift_one<typename data_T::value_type, CONFIG_T>(
                in_data[j], shift[c], lo[c], hi[c]);
        }
        res.write(out_data);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_threshold(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                     typename CONFIG_T::thr_t thr[CONFIG_T::n_chan * CONFIG_T::n_thr],
                     typename CONFIG_T::base_t base[CONFIG_T::n_chan],
                     typename CONFIG_T::sign_t sign[CONFIG_T::n_chan]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=thr complete
    #pragma HLS ARRAY_PARTITION variable=base complete
    #pragma HLS ARRAY_PARTITION variable=sign complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        unsigned c = i % CONFIG_T::n_chan;
        res[i] = cosyn_threshold_one<data_T, CONFIG_T>(data[i], &thr[c * CONFIG_T::n_thr],
                                                       base[c], sign[c]);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_threshold(hls::stream<data_T> &data, hls::stream<res_T> &res,
                     typename CONFIG_T::thr_t thr[CONFIG_T::n_chan * CONFIG_T::n_thr],
                     typename CONFIG_T::base_t base[CONFIG_T::n_chan],
                     typename CONFIG_T::sign_t sign[CONFIG_T::n_chan]) {
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            unsigned c = (i * res_T::size + j) % CONFIG_T::n_chan;
            out_data[j] = cosyn_threshold_one<typename data_T::value_type, CONFIG_T>(
                in_data[j], &thr[c * CONFIG_T::n_thr], base[c], sign[c]);
        }
        res.write(out_data);
    }
}

// (a << shift1) + (b << shift2)
template <class a_T, class b_T, class res_T, typename CONFIG_T>
void cosyn_add(a_T a[CONFIG_T::n_in], b_T b[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        typename CONFIG_T::work_t x = a[i], y = b[i];
        res[i] = (x << CONFIG_T::shift1) + (y << CONFIG_T::shift2);
    }
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void cosyn_add(hls::stream<a_T> &a, hls::stream<b_T> &b, hls::stream<res_T> &res) {
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        a_T in_a = a.read();
        b_T in_b = b.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            typename CONFIG_T::work_t x = in_a[j], y = in_b[j];
            out_data[j] = (x << CONFIG_T::shift1) + (y << CONFIG_T::shift2);
        }
        res.write(out_data);
    }
}

} // namespace nnet

#endif
