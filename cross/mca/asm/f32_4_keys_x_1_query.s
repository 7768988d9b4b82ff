ldr	q1, [x10], #16
ldr	q2, [x11]
ldr	q3, [x11, x15]
ldr	q4, [x11, x13]
add	x12, x9, #8
ldr	q5, [x11, x19]
fmla	v0.4s, v2.4s, v1.4s
ldur	x16, [x29, #-144]
fmla	v16.4s, v3.4s, v1.4s
fmla	v7.4s, v4.4s, v1.4s
add	x9, x9, #4
fmla	v6.4s, v5.4s, v1.4s
cmp	x12, x16
add	x11, x11, #16
b.ls	.LBB187_20
