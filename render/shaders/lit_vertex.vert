#version 330 core
// Vertex shading on the GPU: pyrender's metallic-roughness model (shaders/mesh.frag) evaluated once per
// vertex for the directional lights of the render settings; the rasteriser interpolates the colours.
// render/offscreen.py (`shade_vertices`) is the same model in numpy, kept as the tested reference.
// Names in CAPITALS starting with EVALSITE_ are replaced by pyrender's define substitution.

layout(location = 0) in vec3 position;
#ifdef NORMAL_LOC
layout(location = NORMAL_LOC) in vec3 normal;
#endif
#ifdef COLOR_0_LOC
layout(location = COLOR_0_LOC) in vec4 color_0;
#endif
layout(location = INST_M_LOC) in mat4 inst_m;

struct Material {
    vec3 emissive_factor;
    vec4 base_color_factor;
    float metallic_factor;
    float roughness_factor;
};

uniform mat4 M;
uniform mat4 V;
uniform mat4 P;
uniform vec3 cam_pos;
uniform Material material;

out vec4 lit_color;

const float PI = 3.141592653589793;
const float MIN_ROUGHNESS = 0.04;
const int N_LIGHTS = EVALSITE_N_LIGHTS;
const vec3 LIGHT_DIRS[N_LIGHTS] = EVALSITE_LIGHT_DIRS;
const vec3 LIGHT_RADIANCE[N_LIGHTS] = EVALSITE_LIGHT_RADIANCE;
const float AMBIENT = EVALSITE_AMBIENT;

void main()
{
    mat4 model = M * inst_m;
    vec4 world = model * vec4(position, 1.0);
    gl_Position = P * V * world;

    vec4 base = material.base_color_factor;
#ifdef COLOR_0_LOC
    base *= color_0;
#endif
#ifdef NORMAL_LOC
    vec3 n = normalize(transpose(inverse(mat3(model))) * normal);
#else
    vec3 n = normalize(cam_pos - world.xyz);
#endif
    vec3 v = normalize(cam_pos - world.xyz);
    float roughness = clamp(material.roughness_factor, MIN_ROUGHNESS, 1.0);
    float metallic = clamp(material.metallic_factor, 0.0, 1.0);
    vec3 c_diff = base.rgb * (1.0 - MIN_ROUGHNESS) * (1.0 - metallic);
    vec3 f0 = vec3(MIN_ROUGHNESS * (1.0 - metallic)) + base.rgb * metallic;
    float k = (roughness + 1.0) * (roughness + 1.0) / 8.0;
    float a2 = roughness * roughness * roughness * roughness;
    float nv = clamp(abs(dot(n, v)), 0.001, 1.0);
    vec3 colour = base.rgb * AMBIENT;
    for (int i = 0; i < N_LIGHTS; ++i) {
        vec3 l = LIGHT_DIRS[i];
        vec3 h = normalize(v + l);
        float nl = clamp(dot(n, l), 0.001, 1.0);
        float nh = clamp(dot(n, h), 0.0, 1.0);
        float vh = clamp(dot(v, h), 0.0, 1.0);
        vec3 fresnel = f0 + (vec3(1.0) - f0) * pow(1.0 - vh, 5.0);
        float geometry = (nv / (nv * (1.0 - k) + k)) * (nl / (nl * (1.0 - k) + k));
        float f = nh * nh * (a2 - 1.0) + 1.0;
        float distribution = a2 / (PI * f * f);
        vec3 diffuse = (vec3(1.0) - fresnel) * c_diff / PI;
        vec3 specular = fresnel * geometry * distribution / (4.0 * nl * nv + 0.001);
        colour += nl * LIGHT_RADIANCE[i] * (diffuse + specular);
    }
    lit_color = vec4(pow(clamp(colour, 0.0, 1.0), vec3(1.0 / 2.2)), base.a);
}
