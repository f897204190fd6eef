// cosyn: exact polynomial activation for hls4ml (io_parallel and io_stream).
//
// Computes what the golden model's Poly node computes (cosyn/ir/nodes.py), element
// by element, by Horner's rule in integers: h = c_d, then h = h * x + c_k for
// k = d-1 .. 0. Nothing rounds. Each step's h is held in the type the graph gives
// for that step, CONFIG_T::stage<K>::type (K = 0 is c_d; K = degree is the result),
// so each multiplier and adder is exactly as wide as the value it can hold; the
// product and sum themselves are full width (ap_int widens them), then narrowed to
// the stage type, which holds every value the step can take.
//
// Coefficients are n_chan rows of degree + 1 entries, highest degree first; the
// channel of flat element f is f % n_chan (channels last, as hls4ml lays tensors out).
#ifndef COSYN_POLY_H_
#define COSYN_POLY_H_

#include "ap_int.h"
#include "hls_stream.h"
#include "nnet_common.h"

namespace nnet {

struct cosyn_poly_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;
    static const unsigned degree = 0;
    typedef ap_int<64> work_t;
    typedef ap_int<64> coeff_t;
    // Each layer's config declares `template <unsigned K> struct stage;` and
    // specializes it for K = 0 .. degree with `typedef ap_[u]int<W> type;`.
};

// h after Horner step K, from one channel's coefficient row c[0 .. degree].
template <typename CONFIG_T, unsigned K> struct cosyn_horner {
    typedef typename CONFIG_T::template stage<K>::type h_t;
    typedef typename CONFIG_T::template stage<K - 1>::type prev_t;

    template <class x_T> static h_t eval(x_T x, const typename CONFIG_T::coeff_t *c) {
        #pragma HLS INLINE
        prev_t h = cosyn_horner<CONFIG_T, K - 1>::eval(x, c);
        h_t r = h * x + c[K];
        return r;
    }
};

template <typename CONFIG_T> struct cosyn_horner<CONFIG_T, 0> {
    typedef typename CONFIG_T::template stage<0>::type h_t;

    template <class x_T> static h_t eval(x_T, const typename CONFIG_T::coeff_t *c) {
        #pragma HLS INLINE
        h_t r = c[0];
        return r;
    }
};

template <class x_T, typename CONFIG_T>
typename CONFIG_T::template stage<CONFIG_T::degree>::type cosyn_poly_one(
    x_T x, const typename CONFIG_T::coeff_t *c) {
    #pragma HLS INLINE
    return cosyn_horner<CONFIG_T, CONFIG_T::degree>::eval(x, c);
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_poly(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                typename CONFIG_T::coeff_t coeff[CONFIG_T::n_chan * (CONFIG_T::degree + 1)]) {
    #pragma HLS PIPELINE
    #pragma HLS ARRAY_PARTITION variable=coeff complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        unsigned c = i % CONFIG_T::n_chan;
        res[i] = cosyn_poly_one<data_T, CONFIG_T>(data[i], &coeff[c * (CONFIG_T::degree + 1)]);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_poly(hls::stream<data_T> &data, hls::stream<res_T> &res,
                typename CONFIG_T::coeff_t coeff[CONFIG_T::n_chan * (CONFIG_T::degree + 1)]) {
    #pragma HLS ARRAY_PARTITION variable=coeff complete
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            unsigned c = (i * res_T::size + j) % CONFIG_T::n_chan;
            out_data[j] = cosyn_poly_one<typename data_T::value_type, CONFIG_T>(
                in_data[j], &coeff[c * (CONFIG_T::degree + 1)]);
        }
        res.write(out_data);
    }
}

} // namespace nnet

#endif
