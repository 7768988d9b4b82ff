ldp	q5, q6, [x9, #-16]
add	x11, x8, #16
ldr	q1, [x10]
ldr	q2, [x10, x16]
fcvtl	v7.4s, v1.4h
ldr	q3, [x10, x26]
ldr	q4, [x10, x17]
fcvtl	v16.4s, v2.4h
fcvtl	v17.4s, v3.4h
fcvtl	v18.4s, v4.4h
fmla	v0.4s, v5.4s, v7.4s
fmla	v21.4s, v5.4s, v16.4s
fmla	v20.4s, v5.4s, v17.4s
fcvtl2	v1.4s, v1.8h
fmla	v19.4s, v5.4s, v18.4s
fcvtl2	v2.4s, v2.8h
fcvtl2	v3.4s, v3.8h
fcvtl2	v4.4s, v4.8h
cmp	x11, x21
add	x8, x8, #8
fmla	v0.4s, v6.4s, v1.4s
add	x10, x10, #16
add	x9, x9, #32
fmla	v21.4s, v6.4s, v2.4s
fmla	v20.4s, v6.4s, v3.4s
fmla	v19.4s, v6.4s, v4.4s
b.ls	.LBB186_72
