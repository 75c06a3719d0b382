// File I/O: safetensors files of float32 tensors, and the atomic writes they are saved with.
export {
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type ReadSafetensorsOptions,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
  type TensorFilter,
} from './safetensors';
export { type AppendChunk, writeFileAtomic, writeFileAtomicWith } from './atomic';
