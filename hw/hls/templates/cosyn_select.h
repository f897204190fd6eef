// cosyn: label select for hls4ml (io_parallel and io_stream), as FINN's LabelSelect.
//
// res[j] is the index of the j-th largest of the n_in inputs, j < n_out, equal values
// in index order (cosyn/ir/nodes.py LabelSelect): each input, in index order, goes
// before the first kept value it exceeds, strictly, so an earlier equal one stays ahead.
#ifndef COSYN_SELECT_H_
#define COSYN_SELECT_H_

#include "ap_int.h"
#include "hls_stream.h"
#include "nnet_common.h"

namespace nnet {

struct cosyn_labelselect_config {
    static const unsigned n_in = 1;
    static const unsigned n_out = 1;
    typedef ap_int<64> work_t;
};

// Insert x (index i) into the sorted slots val/idx, `count` of them filled.
template <typename CONFIG_T>
void cosyn_labelselect_insert(typename CONFIG_T::work_t x, unsigned i,
                              typename CONFIG_T::work_t val[CONFIG_T::n_out],
                              unsigned idx[CONFIG_T::n_out], unsigned &count) {
    #pragma HLS INLINE
    unsigned p = count;
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        #pragma HLS UNROLL
        if (j < count && x > val[j] && p == count) p = j;
    }
    if (p >= CONFIG_T::n_out) return;
    for (unsigned j = CONFIG_T::n_out - 1; j > p; j--) {
        val[j] = val[j - 1];
        idx[j] = idx[j - 1];
    }
    val[p] = x;
    idx[p] = i;
    if (count < CONFIG_T::n_out) count++;
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_labelselect(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
    typename CONFIG_T::work_t val[CONFIG_T::n_out];
    unsigned idx[CONFIG_T::n_out];
    #pragma HLS ARRAY_PARTITION variable=val complete
    #pragma HLS ARRAY_PARTITION variable=idx complete
    unsigned count = 0;
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        cosyn_labelselect_insert<CONFIG_T>(data[i], i, val, idx, count);
    }
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        #pragma HLS UNROLL
        res[j] = idx[j];
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void cosyn_labelselect(hls::stream<data_T> &data, hls::stream<res_T> &res) {
    typename CONFIG_T::work_t val[CONFIG_T::n_out];
    unsigned idx[CONFIG_T::n_out];
    #pragma HLS ARRAY_PARTITION variable=val complete
    #pragma HLS ARRAY_PARTITION variable=idx complete
    unsigned count = 0;
    for (unsigned i = 0; i < CONFIG_T::n_in / data_T::size; i++) {
        data_T in_data = data.read();
        for (unsigned j = 0; j < data_T::size; j++) {
            cosyn_labelselect_insert<CONFIG_T>(in_data[j], i * data_T::size + j, val, idx, count);
        }
    }
    for (unsigned i = 0; i < CONFIG_T::n_out / res_T::size; i++) {
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            out_data[j] = idx[i * res_T::size + j];
        }
        res.write(out_data);
    }
}

}  // namespace nnet

#endif
