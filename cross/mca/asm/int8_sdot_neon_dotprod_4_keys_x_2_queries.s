add	x9, x0, x23
ldr	q19, [x14, x23]
ldr	q20, [x13, x23]
ldr	q21, [x9]
ldr	q23, [x9, #512]
add	x9, x23, #32
add	x10, x18, x23
ldr	q18, [x12, x23]
ldr	q17, [x11, x23]
cmp	x9, x21
add	x23, x23, #16
ldr	q22, [x10]
sdot	v16.4s, v19.16b, v21.16b
sdot	v5.4s, v20.16b, v21.16b
sdot	v3.4s, v18.16b, v21.16b
sdot	v1.4s, v17.16b, v21.16b
ldr	q21, [x10, #512]
sdot	v7.4s, v19.16b, v22.16b
sdot	v25.4s, v20.16b, v22.16b
sdot	v27.4s, v18.16b, v22.16b
sdot	v29.4s, v17.16b, v22.16b
sdot	v6.4s, v19.16b, v23.16b
sdot	v24.4s, v19.16b, v21.16b
sdot	v4.4s, v20.16b, v23.16b
sdot	v26.4s, v20.16b, v21.16b
sdot	v2.4s, v18.16b, v23.16b
sdot	v28.4s, v18.16b, v21.16b
sdot	v0.4s, v17.16b, v23.16b
sdot	v30.4s, v17.16b, v21.16b
b.ls	.LBB190_77
