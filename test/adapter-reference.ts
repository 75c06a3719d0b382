// A float64 DoRA/LoRA layer written for the tests alone: it forms V = W0 + s B A explicitly, as PEFT does, and
// derives every gradient by hand. It is itself checked against central finite differences in adapter.test.ts.

export interface LayerValues {
  n: number; // tokens
  k: number; // in-features
  m: number; // out-features
  r: number; // rank
  input: Float64Array; // [n,k]
  weight: Float64Array; // [m,k]
  bias?: Float64Array; // [m]
  loraA: Float64Array; // [r,k]
  loraB: Float64Array; // [m,r]
  magnitude?: Float64Array; // [m]; absent = LoRA
  scale: number;
  eps: number;
}

export interface LayerGrads {
  input: Float64Array;
  loraA: Float64Array;
  loraB: Float64Array;
  magnitude: Float64Array;
  bias: Float64Array;
}

interface Intermediates {
  direction: Float64Array; // V [m,k]
  norm: Float64Array; // [m]
  hidden: Float64Array; // h = x Aᵀ [n,r]
  combined: Float64Array; // u = x W0ᵀ + s h Bᵀ [n,m]
  output: Float64Array; // [n,m]
}

/** The forward pass; `fixedNorm` holds n constant (to finite-difference the detached gradient). */
export function layerForward(values: LayerValues, fixedNorm?: Float64Array): Intermediates {
  const { n, k, m, r, input, weight, bias, loraA, loraB, magnitude, scale, eps } = values;
  const direction = new Float64Array(m * k);
  const norm = new Float64Array(m);
  for (let j = 0; j < m; j++) {
    let squared = 0;
    for (let c = 0; c < k; c++) {
      let value = weight[j * k + c];
      for (let p = 0; p < r; p++) value += scale * loraB[j * r + p] * loraA[p * k + c];
      direction[j * k + c] = value;
      squared += value * value;
    }
    norm[j] = fixedNorm ? fixedNorm[j] : Math.max(Math.sqrt(squared), eps);
  }
  const hidden = new Float64Array(n * r);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < r; p++) {
      let total = 0;
      for (let c = 0; c < k; c++) total += input[i * k + c] * loraA[p * k + c];
      hidden[i * r + p] = total;
    }
  }
  const combined = new Float64Array(n * m);
  const output = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let total = 0;
      for (let c = 0; c < k; c++) total += input[i * k + c] * weight[j * k + c];
      for (let p = 0; p < r; p++) total += scale * hidden[i * r + p] * loraB[j * r + p];
      combined[i * m + j] = total;
      const gain = magnitude ? magnitude[j] / norm[j] : 1;
      output[i * m + j] = gain * total + (bias ? bias[j] : 0);
    }
  }
  return { direction, norm, hidden, combined, output };
}

/** Every gradient of Σ gradOutput ⊙ y, with n treated as a constant when `detachNorm`. */
export function layerBackward(values: LayerValues, gradOutput: Float64Array, detachNorm: boolean): LayerGrads {
  const { n, k, m, r, input, weight, loraA, loraB, magnitude, scale, eps } = values;
  const { direction, norm, hidden, combined } = layerForward(values);
  const gradCombined = new Float64Array(n * m);
  const gradDirection = new Float64Array(m * k);
  const grads: LayerGrads = {
    input: new Float64Array(n * k),
    loraA: new Float64Array(r * k),
    loraB: new Float64Array(m * r),
    magnitude: new Float64Array(m),
    bias: new Float64Array(m),
  };
  for (let j = 0; j < m; j++) {
    const gain = magnitude ? magnitude[j] / norm[j] : 1;
    let dot = 0;
    for (let i = 0; i < n; i++) {
      const gy = gradOutput[i * m + j];
      gradCombined[i * m + j] = gy * gain;
      dot += gy * combined[i * m + j];
      grads.bias[j] += gy;
    }
    if (!magnitude) continue;
    grads.magnitude[j] = dot / norm[j];
    if (!detachNorm && norm[j] > eps) {
      // dL/dn_j = −m_j dot / n_j², dn_j/dV_j = V_j / n_j
      const coefficient = (-magnitude[j] * dot) / norm[j] ** 3;
      for (let c = 0; c < k; c++) gradDirection[j * k + c] = coefficient * direction[j * k + c];
    }
  }
  const gradHidden = new Float64Array(n * r); // s ĝ B
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < r; p++) {
      let total = 0;
      for (let j = 0; j < m; j++) total += gradCombined[i * m + j] * loraB[j * r + p];
      gradHidden[i * r + p] = scale * total;
    }
  }
  for (let j = 0; j < m; j++) {
    for (let p = 0; p < r; p++) {
      let total = 0;
      for (let i = 0; i < n; i++) total += gradCombined[i * m + j] * hidden[i * r + p];
      for (let c = 0; c < k; c++) total += gradDirection[j * k + c] * loraA[p * k + c];
      grads.loraB[j * r + p] = scale * total;
    }
  }
  for (let p = 0; p < r; p++) {
    for (let c = 0; c < k; c++) {
      let total = 0;
      for (let i = 0; i < n; i++) total += gradHidden[i * r + p] * input[i * k + c];
      for (let j = 0; j < m; j++) total += scale * loraB[j * r + p] * gradDirection[j * k + c];
      grads.loraA[p * k + c] = total;
    }
  }
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < k; c++) {
      let total = 0;
      for (let j = 0; j < m; j++) total += gradCombined[i * m + j] * weight[j * k + c];
      for (let p = 0; p < r; p++) total += gradHidden[i * r + p] * loraA[p * k + c];
      grads.input[i * k + c] = total;
    }
  }
  return grads;
}
