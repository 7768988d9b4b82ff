ldp	q17, q18, [x11]
add	x12, x11, x26
ldr	q5, [x10]
ldr	q6, [x10, x16]
fcvtl	v4.4s, v5.4h
ldr	q7, [x10, x26]
ldr	q16, [x10, x17]
fcvtl	v3.4s, v6.4h
fcvtl	v2.4s, v7.4h
fcvtl	v1.4s, v16.4h
fmla	v0.4s, v17.4s, v4.4s
fmla	v31.4s, v17.4s, v3.4s
fmla	v27.4s, v17.4s, v2.4s
fcvtl2	v5.4s, v5.8h
fmla	v23.4s, v17.4s, v1.4s
ldp	q19, q17, [x12]
add	x12, x12, x26
fcvtl2	v6.4s, v6.8h
fcvtl2	v7.4s, v7.8h
fmla	v0.4s, v18.4s, v5.4s
fcvtl2	v16.4s, v16.8h
add	x11, x11, #32
fmla	v10.4s, v19.4s, v4.4s
fmla	v30.4s, v19.4s, v3.4s
add	x10, x10, #16
fmla	v26.4s, v19.4s, v2.4s
fmla	v22.4s, v19.4s, v1.4s
fmla	v31.4s, v18.4s, v6.4s
fmla	v27.4s, v18.4s, v7.4s
fmla	v23.4s, v18.4s, v16.4s
fmla	v10.4s, v17.4s, v5.4s
fmla	v30.4s, v17.4s, v6.4s
fmla	v26.4s, v17.4s, v7.4s
fmla	v22.4s, v17.4s, v16.4s
ldp	q18, q17, [x12]
add	x12, x12, x26
fmla	v9.4s, v18.4s, v4.4s
fmla	v29.4s, v18.4s, v3.4s
fmla	v25.4s, v18.4s, v2.4s
fmla	v21.4s, v18.4s, v1.4s
ldp	q19, q18, [x12]
add	x12, x9, #16
cmp	x12, x21
add	x9, x9, #8
fmla	v9.4s, v17.4s, v5.4s
fmla	v29.4s, v17.4s, v6.4s
fmla	v8.4s, v19.4s, v4.4s
fmla	v28.4s, v19.4s, v3.4s
fmla	v24.4s, v19.4s, v2.4s
fmla	v20.4s, v19.4s, v1.4s
fmla	v25.4s, v17.4s, v7.4s
fmla	v21.4s, v17.4s, v16.4s
fmla	v8.4s, v18.4s, v5.4s
fmla	v28.4s, v18.4s, v6.4s
fmla	v24.4s, v18.4s, v7.4s
fmla	v20.4s, v18.4s, v16.4s
b.ls	.LBB186_60
