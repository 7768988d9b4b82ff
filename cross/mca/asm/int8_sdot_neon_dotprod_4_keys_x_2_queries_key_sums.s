add	x8, x24, x23
ldr	q21, [x14, x23]
add	x9, x22, x23
ldr	q22, [x8]
ldr	q23, [x13, x23]
ldr	q25, [x12, x23]
ldr	q26, [x11, x23]
sdot	v20.4s, v21.16b, v22.16b
sdot	v6.4s, v23.16b, v22.16b
sdot	v3.4s, v25.16b, v22.16b
sdot	v1.4s, v26.16b, v22.16b
ldr	q22, [x8, #512]
add	x8, x23, #32
ldr	q24, [x9]
add	x23, x23, #16
cmp	x8, x21
sdot	v4.4s, v21.16b, v24.16b
sdot	v29.4s, v23.16b, v24.16b
sdot	v31.4s, v25.16b, v24.16b
sdot	v9.4s, v26.16b, v24.16b
ldr	q24, [x9, #512]
sdot	v19.4s, v21.16b, v27.16b
sdot	v18.4s, v23.16b, v27.16b
sdot	v17.4s, v25.16b, v27.16b
sdot	v16.4s, v26.16b, v27.16b
sdot	v7.4s, v21.16b, v22.16b
sdot	v28.4s, v21.16b, v24.16b
sdot	v5.4s, v23.16b, v22.16b
sdot	v30.4s, v23.16b, v24.16b
sdot	v2.4s, v25.16b, v22.16b
sdot	v8.4s, v25.16b, v24.16b
sdot	v0.4s, v26.16b, v22.16b
sdot	v10.4s, v26.16b, v24.16b
b.ls	.LBB190_82
