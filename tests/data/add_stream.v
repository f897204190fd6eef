// A hand-written stand-in for a generated design, following the cosyn_top contract
// (AXI4-Stream-named ports, synchronous active-high reset, one element per beat).
//
// Each output element is in + BASE - STEP * channel, where channel counts the input
// elements modulo C (the channel of an HWC stream). The sum goes through a pipeline of
// STAGES registers that stalls as a whole while the output is held, so latency is
// STAGES cycles and the interval one sample's elements. ISIGNED says whether s_axis_tdata
// holds a signed element (sign-extended to OW bits) or an unsigned one.
//
// BUG injects one fault at the input element number K (counted from reset), to prove
// that the testbench sees it: 1 = a wrong value (+1), 2 = the element is lost,
// 3 = the element is duplicated.
`default_nettype none
module cosyn_top #(
    parameter integer IW = 8,
    parameter integer OW = 16,
    parameter integer ISIGNED = 1,
    parameter integer C = 1,
    parameter integer BASE = 5,
    parameter integer STEP = 0,
    parameter integer STAGES = 3,
    parameter integer BUG = 0,
    parameter integer K = 0
) (
    input  wire          clk,
    input  wire          rst,
    input  wire [IW-1:0] s_axis_tdata,
    input  wire          s_axis_tvalid,
    output wire          s_axis_tready,
    input  wire          s_axis_tlast,
    output wire [OW-1:0] m_axis_tdata,
    output wire          m_axis_tvalid,
    input  wire          m_axis_tready,
    output wire          m_axis_tlast
);
    reg [OW-1:0] data  [0:STAGES-1];
    reg          valid [0:STAGES-1];
    reg          last  [0:STAGES-1];
    reg [31:0]   count;      // input elements taken since reset
    reg [31:0]   channel;
    reg          dup_done;

    wire advance = !valid[STAGES-1] || m_axis_tready;
    wire at_k = (count == K);
    wire hold = (BUG == 3) && at_k && !dup_done;  // take element K twice
    wire fire = s_axis_tvalid && s_axis_tready;
    wire [OW-1:0] x = (ISIGNED != 0) ? {{(OW-IW){s_axis_tdata[IW-1]}}, s_axis_tdata}
                                     : {{(OW-IW){1'b0}}, s_axis_tdata};
    wire [31:0] offset = BASE - STEP * channel + ((BUG == 1 && at_k) ? 1 : 0);
    wire [OW-1:0] sum = x + offset[OW-1:0];

    assign s_axis_tready = advance && !hold && !rst;
    assign m_axis_tdata = data[STAGES-1];
    assign m_axis_tvalid = valid[STAGES-1];
    assign m_axis_tlast = last[STAGES-1];

    integer i;
    always @(posedge clk) begin
        if (rst) begin
            for (i = 0; i < STAGES; i = i + 1) valid[i] <= 1'b0;
            count <= 0;
            channel <= 0;
            dup_done <= 1'b0;
        end else begin
            if (advance) begin
                for (i = STAGES - 1; i > 0; i = i - 1) begin
                    valid[i] <= valid[i-1];
                    data[i] <= data[i-1];
                    last[i] <= last[i-1];
                end
                valid[0] <= s_axis_tvalid && !(BUG == 2 && at_k);
                data[0] <= sum;
                last[0] <= s_axis_tlast;
            end
            if (hold && advance && s_axis_tvalid) dup_done <= 1'b1;
            if (fire) begin
                count <= count + 1;
                channel <= (channel == C - 1) ? 0 : channel + 1;
            end
        end
    end
endmodule
